"""The proven allocation ceiling (allocator.sim.bound): hand-checked packings, brute force on
small item sets, and the FGD experiment's real replays staying under it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.sim import load_openb_nodes, load_openb_pods, resolve_trace, run_replay, summarize
from allocator.sim.bound import allocation_bound, bound_at_arrived


def _best_packing(sizes: list[int], bins: int) -> int:
    """Largest total of items packable into `bins` bins of 1000, by trying every assignment."""
    best = 0
    for assign in itertools.product(range(bins + 1), repeat=len(sizes)):  # bins: left out
        load = [0] * bins
        for s, b in zip(sizes, assign, strict=True):
            if b < bins:
                load[b] += s
        if max(load) <= 1000:
            best = max(best, sum(load))
    return best


def test_large_shares_strand_what_only_small_ones_fill() -> None:
    """Four 810-milli shares and two of 100 on three GPUs: 2,630 is both packable and the bound
    (u_191 weighs each 810 as a whole GPU); demand alone would allow 3,000."""
    b = allocation_bound(np.array([810, 810, 810, 810, 100, 100]), 3)
    assert b.milli == pytest.approx(2630.0)
    assert b.threshold == 191
    assert b.percent == pytest.approx(100 * 2630 / 3000)


def test_items_that_pair_up_exactly_lose_nothing() -> None:
    """600 + 400 twice fills two GPUs: the bound is the capacity; three 600s fit only two."""
    assert allocation_bound(np.array([600, 600, 400, 400]), 2).milli == pytest.approx(2000.0)
    assert allocation_bound(np.array([600, 600, 600]), 2).milli == pytest.approx(1200.0)
    assert allocation_bound(np.array([], dtype=np.int64), 4).milli == 0.0


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="gpus"):
        allocation_bound(np.array([100]), 0)
    with pytest.raises(ValueError, match="sizes"):
        allocation_bound(np.array([1001]), 2)
    with pytest.raises(ValueError, match="sizes"):
        allocation_bound(np.array([0, 5]), 2)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=6),
    bins=st.integers(1, 3),
)
def test_bound_is_never_below_the_best_packing(sizes: list[int], bins: int) -> None:
    """An upper bound: at least the exact optimum of every small instance (and at most the
    demand and the capacity)."""
    b = allocation_bound(np.array(sizes), bins)
    opt = _best_packing(sizes, bins)
    assert b.milli >= opt - 1e-6
    assert b.milli <= min(sum(sizes), 1000 * bins) + 1e-6


@pytest.mark.parametrize("policy", ["fgd", "bestfit"])
def test_replays_of_the_default_trace_stay_under_the_bound(policy: str) -> None:
    """The FGD experiment on openb's default trace: what a policy allocates at 100% arrived
    never exceeds the bound for that seed's arrivals, and the bound is below 100% (the trace
    strands capacity whatever the policy)."""
    n, p = resolve_trace("openb-default")
    cluster = load_openb_nodes(n)
    pods = load_openb_pods(p, cluster)
    seed = 42
    bound = bound_at_arrived(pods, int(cluster.total_gpus), seed)
    achieved = summarize(run_replay(cluster, pods, policy, seed))["alloc_at_100"]
    assert 90.0 < achieved <= bound.percent
    assert bound.percent < 99.0
