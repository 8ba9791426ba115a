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


@pytest.mark.parametrize(
    ("seed", "gpus", "bids", "wallets", "incumbents", "alts", "bid_id", "price"),
    [
        # Found by a random search: the plain replay priced b18 at 170.29, the replay with
        # shortcuts at 160.96 (the threshold).
        (51476, 64, 129, 5, 7, 1, "b18", 160.96),
        # Found by comparing builds on 2,000 random rounds: the replay with shortcuts priced b18
        # at 147.12 before the fix.
        (116446, 64, 46, 3, 12, 2, "b18", 71.38),
    ],
)
def test_both_replays_price_at_the_greedy_threshold_where_they_once_did_not(
    seed: int,
    gpus: int,
    bids: int,
    wallets: int,
    incumbents: int,
    alts: int,
    bid_id: str,
    price: float,
) -> None:
    """The replays took the first model where an eviction made room (and the first model where
    the bid fits free), while try_place, at a given value, may evict on whichever model destroys
    the least: the least winning value is a minimum over models (Engine::least_value). Both
    replays must price the bid at its threshold, which re-running greedy with the bid's winning
    alternative alone at values around the payment settles."""
    problem = random_problem(
        seed, gpus=gpus, bids=bids, wallets=wallets, incumbents=incumbents, alternatives=alts
    )
    engine = NativeEngine(problem)
    alloc = engine.greedy()
    cols = engine.to_columns(alloc)
    fast = np.asarray(engine.core.critical_payments(cols, 1))
    plain = np.asarray(engine.core.critical_payments(cols, 1, False))
    assert fast.tolist() == plain.tolist()
    b = next(i for i, bid in enumerate(problem.bids) if bid.id == bid_id)
    pay = float(fast[b])
    assert pay == pytest.approx(price)
    won = problem.bids[b].alternatives[alloc.winners[b][0]]

    def wins(value: float) -> bool:
        alone = (dataclasses.replace(won, value=value),)
        changed = tuple(
            dataclasses.replace(x, alternatives=alone) if x.id == bid_id else x
            for x in problem.bids
        )
        result = solve(dataclasses.replace(problem, bids=changed), solver="greedy")
        return result.winner(bid_id) is not None

    assert wins(pay * 1.001) and not wins(pay * 0.999)
