"""What planning MIG layouts in the round buys, and what it costs in solve time.

Protocol: ``--nodes`` nodes of 8 A100-SXM4-80GB GPUs, each GPU carved in one of NVIDIA's
``all-*`` layouts (all-7g, all-3g, all-2g, all-1g, balanced; seeded, ``--seed``), all idle;
``--bids`` single-instance bids for 80 GB profiles whose mix differs from the carving (the
demand shifted: ``--small`` of them 1g/2g, the rest 3g/4g/7g), values 1-10 per GPU-equivalent.
Each round is solved (greedy, critical payments) three ways:

- ``kept``: every layout kept (``recarvable=False``): the static MIG of today's clusters;
- ``planned``: layouts recarvable at ``--cost`` per re-carved GPU (allocator.solvers.layouts);
- ``free``: no layouts at all (carving is free): an upper reference no real cluster reaches.

Printed (JSON): welfare of each (planned net of its re-carving costs), GPUs re-carved, the
allocated GPU-equivalents, the planner's number of engine solves, and the median wall time of
each (``--repeats``), with ``planned_time_ratio`` = planned / kept time (same process).

    python benchmarks/layout_planning.py --json
    python benchmarks/layout_planning.py --nodes 125 --bids 3000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    MigInstance,
    Node,
    Problem,
    Unit,
    Wallet,
)
from allocator.solvers import solve
from allocator.solvers.layouts import realisable_order

A100 = "A100-SXM4-80GB"
LAYOUTS = {
    "all-7g": {"7g.80gb": 1},
    "all-3g": {"3g.40gb": 2},
    "all-2g": {"2g.20gb": 3},
    "all-1g": {"1g.10gb": 7},
    "balanced": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
}
SMALL, LARGE = ("1g.10gb", "2g.20gb"), ("3g.40gb", "4g.40gb", "7g.80gb")


def _layout(counts: dict[str, int]) -> tuple[MigInstance, ...]:
    per = [MigInstance(p, 0) for p, n in counts.items() for _ in range(n)]
    found = realisable_order(CATALOG[A100], per)
    assert found is not None
    return found[1]


def build(nodes: int, bids: int, small: float, seed: int, cost: float, mode: str) -> Problem:
    rng = random.Random(seed)
    model = CATALOG[A100]
    carved = {name: _layout(c) for name, c in LAYOUTS.items()}
    names = sorted(carved)
    ns = []
    for n in range(nodes):
        gpus = []
        for i in range(8):
            lay = carved[rng.choice(names)]
            if mode == "free":
                gpus.append(Gpu(i, A100, "mig"))
            else:
                gpus.append(Gpu(i, A100, "mig", layout=lay, recarvable=mode == "planned"))
        ns.append(Node(f"n{n}", cpu_milli=10**6, memory_mib=10**7, gpus=tuple(gpus)))
    out = []
    for b in range(bids):
        profile = rng.choice(SMALL) if rng.random() < small else rng.choice(LARGE)
        prof = model.profile(profile)
        assert prof is not None
        value = round(rng.uniform(1, 10) * model.gpu_equivalent(prof), 3)
        out.append(
            Bid(f"b{b}", f"a{b % 50}", "w", (Alternative(value, Unit("mig", profile=profile)),))
        )
    return Problem(
        nodes=tuple(ns),
        wallets=(Wallet("w", 1e9),),
        bids=tuple(out),
        reconfigure_cost=cost if mode == "planned" else 0.0,
    )


def _equivalents(problem: Problem, result: Any) -> float:
    model = CATALOG[A100]
    total = 0.0
    for w in result.winners:
        for pl in w.placements:
            prof = model.profile(pl.mig_profile or "")
            total += model.gpu_equivalent(prof) if prof is not None else 0.0
    return total


def measure(args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {
        "nodes": args.nodes,
        "gpus": args.nodes * 8,
        "bids": args.bids,
        "cost": args.cost,
        "seed": args.seed,
    }
    for mode in ("kept", "planned", "free"):
        pb = build(args.nodes, args.bids, args.small, args.seed, args.cost, mode)
        times, result = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = solve(pb, solver="greedy")
            times.append((time.perf_counter() - t0) * 1000.0)
        assert result is not None
        row[f"{mode}_welfare"] = round(result.welfare, 3)
        row[f"{mode}_gpu_eq"] = round(_equivalents(pb, result), 3)
        row[f"{mode}_ms"] = round(statistics.median(times), 1)
        if mode == "planned":
            row["recarved"] = result.stats.get("recarved", 0)
            row["planner_solves"] = result.stats.get("layout_solves", 1)
    row["planned_time_ratio"] = round(row["planned_ms"] / row["kept_ms"], 2)
    row["planned_vs_free_welfare"] = round(row["planned_welfare"] / row["free_welfare"], 4)
    row["kept_vs_free_welfare"] = round(row["kept_welfare"] / row["free_welfare"], 4)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--bids", type=int, default=800)
    ap.add_argument("--small", type=float, default=0.8, help="share of 1g/2g bids")
    ap.add_argument("--cost", type=float, default=2.0, help="welfare per re-carved GPU")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    row = measure(args)
    if args.json:
        print(json.dumps(row))
    else:
        for key, value in row.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
