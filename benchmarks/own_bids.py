"""What an agent gains under ``critical`` by withdrawing the bids its wallet could not pay for.

Where a wallet runs out, a winner's critical value can be set by its own agent's other bids (the
run without the winner would have spent the money on them; docs/concepts.md, "Where critical is
not truthful"). This measures how much that matters on the benchmark rounds, which is also what
a rule that ignored the agent's own bids would give up in revenue.

Protocol: the 50 solver-quality rounds (``allocator.instances.random_problem``, seeds 0..49, as
in ``payment_accuracy.py``) and ``--sizes`` fleet rounds (8,000 GPUs of the spot-gpu trace,
seeds ``--seeds``), greedy with exact ``critical`` payments. For every wallet with a winner and
a bid that lost ``over_budget``, the round is solved again without that wallet's
``over_budget`` bids; where the wallet wins the same bids, its saving is what it paid before
minus what it pays now.

- ``wallets``: wallets examined; ``same_wins``: those that win the same bids after withdrawing;
- ``gain_share``: among ``same_wins``, the share that pays more than 1% less;
- ``gain_mean``, ``gain_max``: the saving as a fraction of what the wallet paid before;
- ``revenue_share``: the savings summed / the rounds' revenue (what ignoring own bids costs).

    python benchmarks/own_bids.py --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from allocator import solve
from allocator.instances import (
    fleet_problem,
    quality_problem,
    spot_gpu_nodes,
)
from allocator.model import Problem, Result
from allocator.solvers import SolveParams

DEFAULT_FLEET = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "spot-gpu" / "node_info_df.csv"
)
PARAMS = SolveParams(solver="greedy", payments="critical")


def _rounds(fleet: Path, sizes: list[int], seeds: list[int], quality: int) -> list[Problem]:
    out = []
    for seed in range(quality):
        out.append(quality_problem(seed))
    if sizes:
        nodes = spot_gpu_nodes(fleet, 8000)
        for size in sizes:
            for seed in seeds:
                out.append(fleet_problem(nodes, size, seed, round_id=f"own-{size}-{seed}"))
    return out


def _spent(problem: Problem, result: Result, wallet: str) -> tuple[frozenset[str], float]:
    of = {b.id: b.wallet for b in problem.bids}
    won = [w for w in result.winners if of[w.bid_id] == wallet]
    return frozenset(w.bid_id for w in won), sum(w.payment for w in won)


def measure(problem: Problem) -> tuple[list[dict[str, Any]], float]:
    """Per examined wallet: whether it wins the same after withdrawing, what it paid before
    and after; and the round's revenue."""
    base = solve(problem, params=PARAMS)
    of = {b.id: b.wallet for b in problem.bids}
    winners = {of[w.bid_id] for w in base.winners}
    withdrawn: dict[str, set[str]] = {}
    for loss in base.losers:
        if loss.reason == "over_budget" and of[loss.bid_id] in winners:
            withdrawn.setdefault(of[loss.bid_id], set()).add(loss.bid_id)
    rows = []
    for wallet, drop in sorted(withdrawn.items()):
        kept = tuple(b for b in problem.bids if b.id not in drop)
        after = solve(dataclasses.replace(problem, bids=kept), params=PARAMS)
        won0, paid0 = _spent(problem, base, wallet)
        won1, paid1 = _spent(problem, after, wallet)
        rows.append({"same_wins": won0 == won1, "before": paid0, "after": paid1})
    return rows, base.revenue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000", help="fleet rounds' bid counts ('' for none)")
    ap.add_argument("--seeds", default="1,2,3", help="fleet rounds' seeds")
    ap.add_argument("--quality-rounds", type=int, default=50)
    ap.add_argument("--fleet", type=Path, default=DEFAULT_FLEET)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    rounds = _rounds(args.fleet, sizes, seeds, args.quality_rounds)
    rows: list[dict[str, Any]] = []
    revenue = 0.0
    for problem in tqdm(rounds, desc="rounds", file=sys.stderr, disable=None):
        got, rev = measure(problem)
        rows += got
        revenue += rev
    same = [r for r in rows if r["same_wins"]]
    gains = [(r["before"] - r["after"]) / r["before"] for r in same if r["before"] > 0]
    saved = sum(max(0.0, r["before"] - r["after"]) for r in same)
    out = {
        "rounds": len(rounds),
        "wallets": len(rows),
        "same_wins": len(same),
        "gain_share": sum(g > 0.01 for g in gains) / len(gains) if gains else 0.0,
        "gain_mean": statistics.fmean(gains) if gains else 0.0,
        "gain_max": max(gains, default=0.0),
        "revenue_share": saved / revenue if revenue > 0 else 0.0,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>14}: {v:.4f}" if isinstance(v, float) else f"{k:>14}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
