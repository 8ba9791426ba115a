"""The proven allocation ceiling (allocator.sim.bound): hand-checked packings, brute force on
small item sets, and the FGD experiment's real replays staying under it."""

from __future__ import annotations

import itertools
from fractions import Fraction

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


def _dff_bound(sizes: list[int], bins: int) -> float:
    """The best bound from the dual feasible functions u_t (Fekete and Schepers 2001), computed
    here independently: under u_t an item above 1000 - t weighs a whole bin, one below t weighs
    nothing, the rest their size; the fractional knapsack on those weights bounds every packing."""
    best = float(min(sum(sizes), 1000 * bins))
    for t in range(1, 501):
        weighted = [(1000 if s > 1000 - t else (s if s >= t else 0), s) for s in sizes]
        value = float(sum(s for w, s in weighted if w == 0))
        room = 1000.0 * bins
        for w, s in sorted((ws for ws in weighted if ws[0] > 0), key=lambda ws: -ws[1] / ws[0]):
            take = min(1.0, room / w)
            value += take * s
            room -= take * w
            if room <= 0:
                break
        best = min(best, value)
    return best


def _pattern_lp(sizes: list[int], bins: int) -> float:
    """The pattern program solved by OR-Tools' GLOP over every pattern (enumerated), as an
    independent check of the column generation's optimum."""
    from ortools.linear_solver import pywraplp

    counts = {s: sizes.count(s) for s in set(sizes)}
    distinct = sorted(counts)
    patterns: list[tuple[int, ...]] = []

    def grow(j: int, room: int, cur: tuple[int, ...]) -> None:
        if j == len(distinct):
            if cur:
                patterns.append(cur)
            return
        s = distinct[j]
        for c in range(min(room // s, counts[s]) + 1):
            grow(j + 1, room - c * s, cur + (s,) * c)

    grow(0, 1000, ())
    lp = pywraplp.Solver.CreateSolver("GLOP")
    x = [lp.NumVar(0, bins, "") for _ in patterns]
    lp.Add(sum(x) <= bins)
    for s in distinct:
        lp.Add(sum(v * p.count(s) for v, p in zip(x, patterns, strict=True)) <= counts[s])
    lp.Maximize(sum(v * sum(p) for v, p in zip(x, patterns, strict=True)))
    assert lp.Solve() == pywraplp.Solver.OPTIMAL
    return float(lp.Objective().Value())


def test_large_shares_strand_what_only_small_ones_fill() -> None:
    """Four 810-milli shares and two of 100 on three GPUs: 2,630 is both packable and the bound
    (the price of a 100 is its size, an 810 is free but needs a GPU of its own); demand alone
    would allow 3,000."""
    b = allocation_bound(np.array([810, 810, 810, 810, 100, 100]), 3)
    assert b.milli == pytest.approx(2630.0)
    assert b.percent == pytest.approx(100 * 2630 / 3000)
    assert b.packing == (((810, 100), pytest.approx(2.0)), ((810,), pytest.approx(1.0)))


def test_pairs_that_waste_room_are_charged_for_it() -> None:
    """Six 460s and three 530s on three GPUs: a GPU holds two items at most, the best is three
    530 + 460 = 990, so 2,970. The dual feasible functions cannot see that (they allow 3,000);
    the pattern program can. With 470s instead of 460s every pair fills a GPU: 3,000."""
    assert allocation_bound(np.array([470] * 6 + [530] * 3), 3).milli == pytest.approx(3000.0)
    b = allocation_bound(np.array([460] * 6 + [530] * 3), 3)
    assert b.milli == pytest.approx(2970.0)
    assert _dff_bound([460] * 6 + [530] * 3, 3) >= b.milli


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
    assert b.milli <= _dff_bound(sizes, bins) + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([50, 160, 230, 320, 460, 470, 650, 810, 1000]), max_size=40),
    bins=st.integers(1, 12),
)
def test_column_generation_reaches_the_pattern_program_optimum(sizes: list[int], bins: int) -> None:
    """The certified bound equals the optimum of the full pattern program (every pattern
    enumerated, solved by GLOP): column generation stops at the optimum, not above it."""
    if not sizes:
        return
    b = allocation_bound(np.array(sizes), bins)
    assert b.milli == pytest.approx(min(_pattern_lp(sizes, bins), float(sum(sizes))), abs=1e-6)


def _patterns(counts: dict[int, int]) -> list[tuple[int, ...]]:
    """Every multiset of the sizes (each at most as often as it arrived) summing to <= 1000."""
    distinct = sorted(counts)
    out: list[tuple[int, ...]] = []

    def grow(j: int, room: int, cur: tuple[int, ...]) -> None:
        if j == len(distinct):
            out.append(cur)
            return
        s = distinct[j]
        for c in range(min(room // s, counts[s]) + 1):
            grow(j + 1, room - c * s, cur + (s,) * c)

    grow(0, 1000, ())
    return out


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.sampled_from([50, 160, 230, 320, 333, 460, 470, 650, 810, 1000]), max_size=30
    ),
    bins=st.integers(1, 12),
)
def test_the_prices_certify_the_bound_exactly(sizes: list[int], bins: int) -> None:
    """The returned prices are a dual certificate checked here in rational arithmetic over every
    pattern: each price is 0..its size, and G max(y_0, 0) + sum_s n_s y_s, with y_0 the best
    pattern's profit at those prices, is at most the bound returned (so the bound is proven
    whatever the LP solver's tolerances)."""
    if not sizes:
        return
    b = allocation_bound(np.array(sizes), bins)
    counts = {s: sizes.count(s) for s in set(sizes)}
    prices = {s: Fraction(b.prices[s]) for s in counts}
    assert all(0 <= prices[s] <= s for s in counts)
    y0 = max(sum((s - prices[s] for s in p), Fraction(0)) for p in _patterns(counts))
    certificate = bins * max(y0, Fraction(0)) + sum(n * prices[s] for s, n in counts.items())
    assert Fraction(b.milli) >= min(certificate, Fraction(sum(sizes)), Fraction(1000 * bins))


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
    assert bound.percent < 97.0  # the batch goal is above what any policy can reach
