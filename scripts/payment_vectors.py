#!/usr/bin/env python3
"""Save, then check, the payment vectors of many rounds: the exactness guard for changes to the
payment replay (its shortcuts must not change a single payment) or to the `los` pass.

    python scripts/payment_vectors.py save /tmp/payments.json     # before the change
    python scripts/payment_vectors.py check /tmp/payments.json    # after it: exit 1 on any change
    python scripts/payment_vectors.py --rule los --big save /tmp/los.json   # the `los` rule

Rounds: random_problem seeds 0-60 (greedy, and every third after 300 local-search moves), 20
larger random rounds (96 GPUs, 300 bids; every fourth also after local search), and the
spot-gpu fleet cut to 8,000 GPUs with 1,000 and 3,000 random bids (and 1,000 GPUs with 1,000
bids), and the 50 rounds of benchmarks/solver_quality.py (greedy); `--big` adds 10,000 bids on
8,000 GPUs, seeds 1-3 (about a minute of critical payments each, well under a second of
`los`). `--rule los` saves and checks `los` payments instead (`critical`: the default). Each
entry holds a digest of the allocation, so a change of allocation is told apart from a change of
payment. Payments must be the same doubles (JSON keeps them exactly).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from allocator.instances import (
    fleet_problem,
    quality_problem,
    random_problem,
)
from allocator.model import Problem
from allocator.sim.traces import data_dir
from allocator.solvers.assemble import Allocation
from allocator.solvers.native import NativeEngine

Case = tuple[str, Callable[[], Problem], int | None]  # name, problem, local-search seed


def _fleet(gpus: int, bids: int, seed: int) -> Problem:
    fleet = data_dir() / "spot-gpu" / "node_info_df.csv"
    return fleet_problem(fleet, bids, seed, gpus=gpus, round_id=f"fleet-{gpus}-{bids}-{seed}")


def _larger(seed: int) -> Problem:
    return random_problem(seed, gpus=96, bids=300, incumbents=12, wallets=8)


def _quality(seed: int) -> Problem:
    return quality_problem(seed)


def cases(big: bool) -> Iterator[Case]:
    for s in range(61):
        yield f"rp{s}", (lambda s=s: random_problem(s)), None
    for s in range(0, 61, 3):
        yield f"rp{s}-local", (lambda s=s: random_problem(s)), s
    for s in range(20):
        yield f"rpbig{s}", (lambda s=s: _larger(s)), None
        if s % 4 == 0:
            yield f"rpbig{s}-local", (lambda s=s: _larger(s)), s
    for s in (1, 2, 3):
        yield f"fleet8000x1000s{s}", (lambda s=s: _fleet(8000, 1000, s)), None
        yield f"fleet8000x3000s{s}", (lambda s=s: _fleet(8000, 3000, s)), None
    yield "fleet1000x1000s1", (lambda: _fleet(1000, 1000, 1)), None
    yield "fleet8000x1000s1-local", (lambda: _fleet(8000, 1000, 1)), 7
    for s in range(50):
        yield f"quality{s}", (lambda s=s: _quality(s)), None
    if big:
        for s in (1, 2, 3):
            yield f"fleet8000x10000s{s}", (lambda s=s: _fleet(8000, 10000, s)), None


def _digest(alloc: Allocation) -> str:
    key = repr((sorted(alloc.winners.items()), sorted(alloc.evicted)))
    return hashlib.sha1(key.encode()).hexdigest()


def run(
    make: Callable[[], Problem], local_seed: int | None, rule: str = "critical"
) -> tuple[str, dict[str, float], float]:
    engine = NativeEngine(make())
    alloc = engine.greedy()
    if local_seed is not None:
        alloc = engine.local(
            alloc, time_limit=1e6, seed=local_seed, max_iterations=300, patience=10**9
        )
    t = time.perf_counter()
    pay = engine.los_payments(alloc) if rule == "los" else engine.critical_payments(alloc)
    seconds = time.perf_counter() - t
    return _digest(alloc), {str(b): v for b, v in sorted(pay.items())}, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("save", "check"))
    ap.add_argument("file", type=Path)
    ap.add_argument("--big", action="store_true", help="add the 10,000-bid fleet round")
    ap.add_argument(
        "--rule", choices=("critical", "los"), default="critical", help="the payment rule"
    )
    args = ap.parse_args()
    saved: dict[str, dict[str, object]] = {}
    if args.mode == "check":
        try:
            saved = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"error: {args.file}: {e}", file=sys.stderr)
            return 2
    out: dict[str, dict[str, object]] = {}
    bad = checked = 0
    for name, make, local_seed in cases(args.big):
        digest, pay, seconds = run(make, local_seed, args.rule)
        out[name] = {"allocation": digest, "payments": pay, "seconds": round(seconds, 3)}
        if args.mode == "save":
            print(f"{name}: {len(pay)} payments, {seconds:.2f} s", flush=True)
            continue
        ref = saved.get(name)
        if not isinstance(ref, dict):
            print(f"{name}: not in {args.file}", flush=True)
            continue
        checked += 1
        problems = []
        if ref.get("allocation") != digest:
            problems.append("allocation differs")
        ref_pay = ref.get("payments") or {}
        assert isinstance(ref_pay, dict)
        if set(ref_pay) != set(pay):
            problems.append("winners differ")
        for b, v in pay.items():
            r = ref_pay.get(b)
            if r is not None and v != float(r):
                problems.append(f"bid {b}: {v!r} against {r!r}")
        bad += bool(problems)
        verdict = "same" if not problems else "DIFFERENT: " + "; ".join(problems[:4])
        print(f"{name}: {verdict} ({seconds:.2f} s, was {ref.get('seconds')} s)", flush=True)
    if args.mode == "save":
        args.file.write_text(json.dumps(out) + "\n", encoding="utf-8")
        print(f"saved {len(out)} payment vectors to {args.file}")
        return 0
    print(f"checked {checked} payment vectors: {bad} different")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
