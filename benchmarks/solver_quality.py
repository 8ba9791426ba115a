"""Solution quality of `local` (and `greedy`) against the CP-SAT optimum.

Protocol: 50 seeded random rounds (``allocator.instances.random_problem``, seeds 0..49) of
16 to 64 GPUs and 50 to 200 bids, with MIG, whole and shared GPUs, gangs, wallets and
incumbents. Each is solved by ``greedy``, ``local`` (time limit ``--local-time``) and ``cpsat``
(time limit ``--cpsat-time``, warm-started, one worker). Ratio = welfare / CP-SAT objective
(1.0 when both are 0). Every result is checked with ``allocator.verify``.

    python benchmarks/solver_quality.py --json
    python benchmarks/solver_quality.py --json --seeds 3,11   # only these rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from allocator import solve, verify
from allocator.instances import random_problem

SIZES = [(16, 50), (32, 100), (48, 150), (64, 200)]


def _ratio(x: float, opt: float) -> float:
    if abs(opt) < 1e-9:
        return 1.0 if abs(x) < 1e-9 else float("inf")
    return x / opt


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        msg = f"not a comma-separated list of integers: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"need seeds >= 0, got {text!r}")
    return seeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--local-time", type=float, default=2.0)
    ap.add_argument("--cpsat-time", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--seeds", type=_seeds, default=None, help="comma-separated seeds (default: 0..instances-1)"
    )
    args = ap.parse_args()
    seeds = args.seeds if args.seeds is not None else list(range(args.instances))

    rows = []
    for n, seed in enumerate(seeds):
        gpus, bids = SIZES[seed % len(SIZES)]
        problem = random_problem(seed, gpus=gpus, bids=bids, wallets=6, incumbents=6)
        out = {"seed": seed, "gpus": problem.gpu_count, "bids": len(problem.bids)}
        for solver, limit in (
            ("greedy", 1.0),
            ("local", args.local_time),
            ("cpsat", args.cpsat_time),
        ):
            t0 = time.perf_counter()
            r = solve(problem, solver=solver, payments="first-price", time_limit=limit, seed=seed)
            out[f"{solver}_s"] = time.perf_counter() - t0
            out[f"{solver}_welfare"] = r.welfare
            bad = verify(problem, r)
            if bad:
                print(
                    f"seed {seed} {solver}: {len(bad)} violations, first: {bad[0]}", file=sys.stderr
                )
            out[f"{solver}_valid"] = not bad
            if solver == "cpsat":
                out["cpsat_status"] = r.status
                out["cpsat_bound"] = r.stats.get("bound")
        out["ratio_local"] = _ratio(out["local_welfare"], out["cpsat_welfare"])
        out["ratio_greedy"] = _ratio(out["greedy_welfare"], out["cpsat_welfare"])
        rows.append(out)
        print(
            f"[{n + 1}/{len(seeds)}] seed={seed} gpus={out['gpus']} bids={out['bids']} "
            f"local/opt={out['ratio_local']:.4f} greedy/opt={out['ratio_greedy']:.4f} "
            f"cpsat={out['cpsat_status']} {out['cpsat_s']:.1f}s",
            file=sys.stderr,
        )
    summary = {
        "instances": len(rows),
        "proven_optimal": sum(r["cpsat_status"] == "optimal" for r in rows),
        "all_valid": all(r[f"{s}_valid"] for r in rows for s in ("greedy", "local", "cpsat")),
        "min_ratio": min(r["ratio_local"] for r in rows),
        "median_ratio": statistics.median(r["ratio_local"] for r in rows),
        "min_ratio_greedy": min(r["ratio_greedy"] for r in rows),
        "median_ratio_greedy": statistics.median(r["ratio_greedy"] for r in rows),
        "median_local_s": statistics.median(r["local_s"] for r in rows),
        "median_cpsat_s": statistics.median(r["cpsat_s"] for r in rows),
        "max_cpsat_s": max(r["cpsat_s"] for r in rows),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
