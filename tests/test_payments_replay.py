"""The critical-payment replay's shortcuts (dirty nodes, runners-up, restricted gang and
rack/zone searches, witness scan, cached placement) against plain per-winner replays that search
every item and every position in full: the payments must be the same doubles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import solve
from allocator.instances import random_problem
from allocator.solvers.native import NativeEngine


def _both(seed: int, gpus: int, bids: int, wallets: int, incumbents: int, alts: int) -> None:
    problem = random_problem(
        seed, gpus=gpus, bids=bids, wallets=wallets, incumbents=incumbents, alternatives=alts
    )
    engine = NativeEngine(problem)
    cols = engine.to_columns(engine.greedy())
    fast = np.asarray(engine.core.critical_payments(cols, 1))
    plain = np.asarray(engine.core.critical_payments(cols, 1, False))
    assert fast.tolist() == plain.tolist()
    # The engine keeps its shortcuts after a plain call.
    assert np.asarray(engine.core.critical_payments(cols, 1)).tolist() == fast.tolist()


# Derandomized: the same 60 examples on every run (CI must not fail by chance; the round a
# random search once found is pinned below).
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10**6),
    gpus=st.sampled_from([16, 32, 48, 64]),
    bids=st.integers(20, 160),
    wallets=st.integers(1, 8),
    incumbents=st.integers(0, 8),
    alts=st.integers(1, 3),
)
def test_shortcuts_match_plain_replays(
    seed: int, gpus: int, bids: int, wallets: int, incumbents: int, alts: int
) -> None:
    _both(seed, gpus, bids, wallets, incumbents, alts)


def test_shortcuts_match_plain_replays_on_crowded_rounds() -> None:
    # Many bids on few GPUs: long replays, many dirty nodes and racks, evictions.
    for seed in range(6):
        _both(seed, 32, 300, 4, 8, 2)


def test_both_replays_price_at_the_threshold_where_the_plain_replay_once_disagreed() -> None:
    """Found by a random search (seed 51476): the plain replay priced b18 at 170.29, the replay
    with shortcuts at 160.96. Re-running greedy settles it: b18 wins bidding 161.2 and loses
    bidding 160. The plain replay took the first model where an eviction made room (and the
    first model where the bid fits free), while try_place, at a given value, may evict on
    whichever model destroys the least: the least winning value is a minimum over models
    (Engine::least_value). Both replays now price b18 at its threshold."""
    problem = random_problem(51476, gpus=64, bids=129, wallets=5, incumbents=7, alternatives=1)
    engine = NativeEngine(problem)
    cols = engine.to_columns(engine.greedy())
    fast = np.asarray(engine.core.critical_payments(cols, 1))
    plain = np.asarray(engine.core.critical_payments(cols, 1, False))
    assert fast.tolist() == plain.tolist()
    b = next(i for i, bid in enumerate(problem.bids) if bid.id == "b18")
    pay = float(fast[b])
    assert pay == pytest.approx(160.96)

    def wins(value: float) -> bool:
        bids = tuple(
            dataclasses.replace(
                x, alternatives=tuple(dataclasses.replace(a, value=value) for a in x.alternatives)
            )
            if x.id == "b18"
            else x
            for x in problem.bids
        )
        result = solve(dataclasses.replace(problem, bids=bids), solver="greedy")
        return result.winner("b18") is not None

    assert wins(pay * 1.001) and not wins(pay * 0.999)
