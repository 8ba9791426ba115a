"""How close the ``los`` payment rule comes to exact ``critical`` payments.

Protocol: the production-fleet rounds of ``solver_scale.py`` (8,000 GPUs of the spot-gpu trace;
``--sizes`` bids x ``--seeds``) and the 50 solver-quality rounds (``allocator.instances.
random_problem``, seeds 0..49, with MIG, shares, gangs, wallets and incumbents), each allocated
once by greedy and priced both ways (the C++ calls alone). Errors are |los - critical| / bid per
winner, pooled over every winner of every round.

- ``revenue_ratio``: total los revenue / total critical revenue;
- ``within_1pct``: share of winners whose error is at most 1% of the bid;
- ``mean_err``, ``p99_err``, ``max_err``: of the errors;
- ``overcharged_1pct``: share of winners charged more than 1% of the bid above critical;
- ``loser_deviation_gain``: over ``--losers`` losers sampled from the solver-quality rounds,
  each raised to just above its exact critical value (found by raising it far and reading its
  critical payment), the share that would win under ``los`` and pay less than that value;
- ``by_kind``: ``within_1pct`` and ``mean_err`` per winner kind (single replica; gangs by
  locality), where the rule is known to be weaker;
- ``los_ms`` / ``critical_ms``: summed times of the two pricing calls.

    python benchmarks/payment_accuracy.py --json
    python benchmarks/payment_accuracy.py --sizes 1000 --seeds 1 --quality-rounds 10 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from allocator.instances import (
    fleet_problem,
    quality_problem,
)
from allocator.model import Problem
from allocator.solvers.native import NativeEngine

DEFAULT_FLEET = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "spot-gpu" / "node_info_df.csv"
)


def _fleet_round(fleet: Path, bids: int, seed: int) -> Problem:
    return fleet_problem(fleet, bids, seed, round_id=f"acc-{bids}-{seed}")


def _kind(problem: Problem, b: int, a: int) -> str:
    alt = problem.bids[b].alternatives[a]
    return "single" if alt.replicas == 1 else f"gang-{alt.locality}"


def _alloc_key(problem: Problem, alloc: Any) -> str:
    """The round and its allocation (winners, alternatives, placements): what a cached critical
    payment belongs to."""
    text = json.dumps(
        [
            problem.round_id,
            len(problem.bids),
            sorted((b, a, repr(p)) for b, (a, p) in alloc.winners.items()),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _price(
    problem: Problem, name: str, cache: Path | None
) -> tuple[list[dict[str, Any]], float, float]:
    """Every greedy winner of ``problem`` with both payments, and the two calls' times (ms).
    With ``cache``, exact critical payments are read from (or written to) ``cache/name.json``
    when the allocation matches; a cached round reports a critical time of 0."""
    engine = NativeEngine(problem)
    alloc = engine.greedy()
    cols = engine.to_columns(alloc)
    t = time.perf_counter()
    los = engine.core.los_payments(cols)
    los_ms = (time.perf_counter() - t) * 1000
    key = _alloc_key(problem, alloc)
    path = cache / f"{name}.json" if cache else None
    crit: Any = None
    crit_ms = 0.0
    if path and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            crit = stored["critical"]
    if crit is None:
        t = time.perf_counter()
        crit = [float(x) for x in engine.core.critical_payments(cols, 1)]
        crit_ms = (time.perf_counter() - t) * 1000
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "critical": crit}))
    rows = []
    for b, (a, _) in alloc.winners.items():
        value = problem.bids[b].alternatives[a].value
        rows.append(
            {
                "round": name,
                "bid": b,
                "kind": _kind(problem, b, a),
                "value": value,
                "los": float(los[b]),
                "critical": float(crit[b]),
            }
        )
    return rows, los_ms, crit_ms


def _with_value(problem: Problem, b: int, value: float) -> Problem:
    bid = problem.bids[b]
    alts = tuple(dataclasses.replace(x, value=value) for x in bid.alternatives[:1])
    bids = list(problem.bids)
    bids[b] = dataclasses.replace(bid, alternatives=alts)
    return dataclasses.replace(problem, bids=tuple(bids))


def _loser_gains(rounds: list[Problem], want: int, seed: int) -> tuple[int, int]:
    """(losers tried, those that gain): a loser raised to just above its critical value."""
    rng = random.Random(seed)
    pool = []
    for problem in rounds:
        alloc = NativeEngine(problem).greedy()
        pool += [(problem, b) for b in range(len(problem.bids)) if b not in alloc.winners]
    rng.shuffle(pool)
    tried = gains = 0
    for problem, b in pool:
        if tried >= want:
            break
        wallet = next(w for w in problem.wallets if w.name == problem.bids[b].wallet)
        far = _with_value(problem, b, wallet.balance)  # the most its wallet lets it bid
        engine = NativeEngine(far)
        alloc = engine.greedy()
        if b not in alloc.winners:
            continue  # cannot win at any value its wallet allows
        critical = engine.critical_payments(alloc)[b]
        just_above = _with_value(problem, b, critical * (1 + 1e-6) + 1e-9)
        engine = NativeEngine(just_above)
        alloc = engine.greedy()
        tried += 1
        if b in alloc.winners and engine.los_payments(alloc)[b] < critical * (1 - 1e-6):
            gains += 1
    return tried, gains


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = sorted(abs(r["los"] - r["critical"]) / r["value"] for r in rows if r["value"] > 0)
    n = max(1, len(errs))
    over = sum(1 for r in rows if r["los"] - r["critical"] > 0.01 * r["value"])
    crit = sum(r["critical"] for r in rows)
    return {
        "winners": len(rows),
        "revenue_ratio": round(sum(r["los"] for r in rows) / crit, 4) if crit else None,
        "within_1pct": round(sum(1 for e in errs if e <= 0.01) / n, 4),
        "mean_err": round(sum(errs) / n, 4),
        "p99_err": round(errs[min(len(errs) - 1, int(0.99 * len(errs)))], 4) if errs else 0.0,
        "max_err": round(errs[-1], 4) if errs else 0.0,
        "overcharged_1pct": round(over / n, 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,3000,10000", help="fleet rounds' bid counts")
    ap.add_argument("--seeds", default="1,2,3", help="fleet rounds' seeds")
    ap.add_argument("--quality-rounds", type=int, default=50)
    ap.add_argument("--losers", type=int, default=100)
    ap.add_argument("--fleet", type=Path, default=DEFAULT_FLEET)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder of exact critical payments per round, reused while the allocation matches "
        "(it does not know the rule: empty it after a change to critical payments)",
    )
    ap.add_argument("--rows", type=Path, default=None, help="write every winner's row (JSON)")
    args = ap.parse_args()
    if not args.fleet.exists():
        print(f"error: fleet file {args.fleet} not found (use --fleet)", file=sys.stderr)
        return 2
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        print("error: --sizes and --seeds take comma-separated integers", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    los_ms = crit_ms = 0.0
    instances = 0
    per_size: dict[str, Any] = {}
    for size in sizes:
        size_rows: list[dict[str, Any]] = []
        for seed in seeds:
            print(f"fleet round: {size} bids, seed {seed} ...", file=sys.stderr)
            got, lms, cms = _price(
                _fleet_round(args.fleet, size, seed), f"fleet-{size}-{seed}", args.cache
            )
            size_rows += got
            los_ms, crit_ms, instances = los_ms + lms, crit_ms + cms, instances + 1
        per_size[str(size)] = _summary(size_rows)
        rows += size_rows
    quality = [quality_problem(s) for s in range(args.quality_rounds)]
    print(f"{len(quality)} solver-quality rounds ...", file=sys.stderr)
    for i, problem in enumerate(quality):
        got, lms, cms = _price(problem, f"quality-{i}", args.cache)
        rows += got
        los_ms, crit_ms, instances = los_ms + lms, crit_ms + cms, instances + 1
    print(f"loser deviations ({args.losers}) ...", file=sys.stderr)
    tried, gains = _loser_gains(quality, args.losers, seed=1)
    kinds = sorted({r["kind"] for r in rows})
    out = {
        "instances": instances,
        **_summary(rows),
        "loser_deviation_gain": round(gains / tried, 4) if tried else None,
        "losers_tried": tried,
        "by_size": per_size,
        "by_kind": {
            k: {
                key: v
                for key, v in _summary([r for r in rows if r["kind"] == k]).items()
                if key in ("winners", "within_1pct", "mean_err", "overcharged_1pct")
            }
            for k in kinds
        },
        "los_ms": round(los_ms, 1),
        "critical_ms": round(crit_ms, 1),
    }
    if args.rows:
        args.rows.write_text(json.dumps(rows))
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
