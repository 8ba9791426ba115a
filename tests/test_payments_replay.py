"""The critical-payment replay's shortcuts (dirty nodes, runners-up, restricted gang and
rack/zone searches, witness scan, cached placement) against plain per-winner replays that search
every item and every position in full: the payments must be the same doubles."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
