"""How the C++ engine scales on a production fleet: greedy, local search, critical payments.

Protocol: the cluster is the node list of Alibaba's spot-gpu trace
(``../shared/data/spot-gpu/node_info_df.csv``; A100/A800/H800 MIG-capable, every third such
node in MIG mode; other models alternate whole and shared), cut to ``--gpus`` GPUs. ``--bids``
random bids (``allocator.instances.random_bids``, seed ``--seed``) over 200 agents: whole GPUs
(1-8 per replica), 80 GB MIG profiles and shares, 30% gangs. Each phase is timed ``--repeats``
times in one process and the median is printed. One core (the engine is single-threaded).

- ``greedy_ms``: the C++ greedy call alone; ``local_ms``: the C++ local search (``--local-time``
  limit); ``payments_ms``: C++ payments (``--payments``: ``critical`` or ``los``) for every
  winner of the greedy allocation;
  ``explain_ms``: C++ loss reasons; with ``--threads N`` also ``payments_threads_ms``, the
  same payments on N threads (checked equal to the serial ones);
- ``python_overhead_ms``: lowering the Problem to arrays, turning arrays back into Placements and
  assembling the Result, i.e. what ``solve(solver="greedy")`` spends outside the C++ calls;
- ``build_problem_ms``: constructing and validating the Problem objects (reported apart).

    python benchmarks/solver_scale.py --json --bids 10000 --gpus 8000
    python benchmarks/solver_scale.py --sweep 100,1000,10000,100000 --gpus 8000
    python benchmarks/solver_scale.py --json --bids 10000 --gpus 8000 --payments los
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from allocator.instances import (
    fleet_problem,
)
from allocator.solvers.assemble import build_result
from allocator.solvers.native import NativeEngine

DEFAULT_FLEET = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "spot-gpu" / "node_info_df.csv"
)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def measure(
    fleet: Path,
    gpus: int,
    bids: int,
    seed: int,
    repeats: int,
    local_time: float,
    payments: bool = True,
    threads: int = 1,
    rule: str = "critical",
) -> dict[str, Any]:
    """Median timings of every phase for one size."""
    t0 = time.perf_counter()
    problem = fleet_problem(fleet, bids, seed, gpus=gpus, round_id=f"scale-{bids}")
    build_ms = _ms(t0)
    phases: dict[str, list[float]] = {
        k: []
        for k in (
            "lower_ms",
            "greedy_ms",
            "decode_ms",
            "local_ms",
            "payments_ms",
            "payments_threads_ms",
            "explain_ms",
            "assemble_ms",
        )
    }
    out: dict[str, Any] = {}
    for _ in range(repeats):
        t = time.perf_counter()
        engine = NativeEngine(problem)
        phases["lower_ms"].append(_ms(t))
        core = engine.core  # the raw C++ engine: time it without the Python wrapping
        t = time.perf_counter()
        raw = core.greedy()
        phases["greedy_ms"].append(_ms(t))
        t = time.perf_counter()
        alloc = engine.to_allocation(raw)
        phases["decode_ms"].append(_ms(t))
        arrays = engine.to_columns(alloc)
        if payments:
            t = time.perf_counter()
            if rule == "los":
                serial = core.los_payments(arrays)
            else:
                serial = core.critical_payments(arrays, 1)
            phases["payments_ms"].append(_ms(t))
            if threads != 1 and rule == "critical":
                t = time.perf_counter()
                parallel = core.critical_payments(arrays, threads)
                phases["payments_threads_ms"].append(_ms(t))
                if not (parallel == serial).all():
                    raise AssertionError("payments differ between 1 and --threads threads")
        t = time.perf_counter()
        core.explain(arrays)
        phases["explain_ms"].append(_ms(t))
        t = time.perf_counter()
        improved = core.local(arrays, local_time, seed, -1, 0)
        phases["local_ms"].append(_ms(t))
        pay = {b: 0.0 for b in alloc.winners}  # assembly time does not depend on the amounts
        reasons = engine.explain(alloc)
        t = time.perf_counter()
        build_result(
            problem,
            alloc,
            solver="greedy",
            payment_rule="critical",
            payments=pay,
            reasons=reasons,
            status="feasible",
        )
        phases["assemble_ms"].append(_ms(t))
        out["welfare_greedy"] = raw.welfare
        out["welfare_local"] = improved.welfare
        out["winners"] = len(alloc.winners)
    med = {k: statistics.median(v) if v else float("nan") for k, v in phases.items()}
    return {
        "bids": bids,
        "gpus": problem.gpu_count,
        "nodes": len(problem.nodes),
        "greedy_ms": round(med["greedy_ms"], 2),
        "local_ms": round(med["local_ms"], 2),
        "payments_ms": round(med["payments_ms"], 2) if payments else None,
        "payment_rule": rule,
        "threads": threads,
        "payments_threads_ms": (
            round(med["payments_threads_ms"], 2)
            if payments and threads != 1 and rule == "critical"
            else None
        ),
        "explain_ms": round(med["explain_ms"], 2),
        "python_overhead_ms": round(med["lower_ms"] + med["decode_ms"] + med["assemble_ms"], 2),
        "lower_ms": round(med["lower_ms"], 2),
        "build_problem_ms": round(build_ms, 1),
        "welfare_greedy": round(out["welfare_greedy"], 2),
        "welfare_local": round(out["welfare_local"], 2),
        "winners": out["winners"],
        "repeats": repeats,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bids", type=int, default=10_000)
    ap.add_argument("--gpus", type=int, default=8_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--local-time", type=float, default=1.0)
    ap.add_argument("--fleet", type=Path, default=DEFAULT_FLEET)
    ap.add_argument("--sweep", help="comma-separated bid counts; prints one row per size")
    ap.add_argument(
        "--payments-up-to",
        type=int,
        default=10**9,
        help="time critical payments only for rounds of at most this many bids",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="also time payments on this many threads (0: one per CPU); payments_ms stays serial",
    )
    ap.add_argument(
        "--payments",
        choices=("critical", "los"),
        default="critical",
        help="the rule payments_ms times (--threads applies to critical only)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads < 0:
        print("error: --threads: need an integer >= 0", file=sys.stderr)
        return 2
    if not args.fleet.exists():
        print(f"error: fleet file {args.fleet} not found (use --fleet)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.bids]
    rows = []
    for n in sizes:
        print(f"measuring {n} bids on {args.gpus} GPUs ...", file=sys.stderr)
        rows.append(
            measure(
                args.fleet,
                args.gpus,
                n,
                args.seed,
                args.repeats,
                args.local_time,
                payments=n <= args.payments_up_to,
                threads=args.threads,
                rule=args.payments,
            )
        )
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows))
    else:
        keys = [
            "bids",
            "gpus",
            "greedy_ms",
            "local_ms",
            "payments_ms",
            "payments_threads_ms",
            "explain_ms",
            "python_overhead_ms",
            "build_problem_ms",
            "welfare_greedy",
            "welfare_local",
        ]
        print(" | ".join(keys))
        for r in rows:
            print(" | ".join(str(r[k]) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
