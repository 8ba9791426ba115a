"""MIG layouts in the round (allocator.solvers.layouts): kept layouts, re-carving when it pays,
never under running work, the checker's layout rules, and the layouts mig-parted can realise."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    ProblemError,
    Unit,
    Wallet,
    problem_from_dict,
    problem_to_dict,
    result_from_dict,
    result_to_dict,
)
from allocator.solvers import solve
from allocator.solvers.layouts import fill_layout, pin, realisable_order
from allocator.verify import verify

A100 = "A100-SXM4-80GB"
ALL_7G = (MigInstance("7g.80gb", 0),)
ALL_1G = tuple(MigInstance("1g.10gb", s) for s in range(7))
BALANCED = (
    MigInstance("1g.10gb", 0),
    MigInstance("1g.10gb", 1),
    MigInstance("2g.20gb", 2),
    MigInstance("3g.40gb", 4),
)
SOLVERS = ("greedy", "local", "cpsat")


def _problem(
    layouts: list[tuple[MigInstance, ...]],
    bids: list[tuple[str, float]],
    *,
    cost: float = 5.0,
    recarvable: bool = True,
    incumbents: tuple[Incumbent, ...] = (),
) -> Problem:
    gpus = tuple(
        Gpu(i, A100, "mig", layout=lay, recarvable=recarvable) for i, lay in enumerate(layouts)
    )
    return Problem(
        nodes=(Node("n", cpu_milli=64_000, memory_mib=512_000, gpus=gpus),),
        wallets=(Wallet("w", 10_000),),
        bids=tuple(
            Bid(f"b{i}", "a", "w", (Alternative(v, Unit("mig", profile=p)),))
            for i, (p, v) in enumerate(bids)
        ),
        incumbents=incumbents,
        reconfigure_cost=cost,
    )


def _on(result, bid: str) -> tuple[int, str, int]:
    pl = result.winner(bid).placements[0]
    return pl.gpus[0], pl.mig_profile, pl.mig_start


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_kept_layout_offers_only_its_instances(solver: str) -> None:
    """Not recarvable: the balanced layout has two 1g instances, so of five 1g bids two win,
    on those instances; the 3g and 2g instances take no 1g."""
    pb = _problem([BALANCED], [("1g.10gb", 10 + i) for i in range(5)], recarvable=False)
    r = solve(pb, solver=solver)
    assert verify(pb, r) == []
    assert sorted(w.bid_id for w in r.winners) == ["b3", "b4"]
    assert {_on(r, b)[2] for b in ("b3", "b4")} == {0, 1}
    assert [(x.recarved, x.instances) for x in r.layouts] == [(False, BALANCED)]
    assert r.stats["recarved"] == 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_idle_gpus_are_recarved_when_the_slices_pay(solver: str) -> None:
    """Two idle all-7g GPUs, nine 1g bids worth 3 and one 7g bid worth 4, re-carving costs 5:
    re-carve one GPU to seven 1g (21 - 5) and keep the other 7g for the 7g bid (4): welfare 20,
    better than re-carving both (27 - 10) or none (4)."""
    bids = [("1g.10gb", 3.0)] * 9 + [("7g.80gb", 4.0)]
    pb = _problem([ALL_7G, ALL_7G], bids)
    r = solve(pb, solver=solver)
    assert verify(pb, r) == []
    assert r.welfare == pytest.approx(20.0)
    assert sorted(x.recarved for x in r.layouts) == [False, True]
    new = next(x for x in r.layouts if x.recarved)
    assert new.instances == ALL_1G
    assert r.winner("b9") is not None and _on(r, "b9")[0] != new.gpu


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_recarving_when_it_costs_more_than_it_brings(solver: str) -> None:
    pb = _problem([ALL_7G], [("1g.10gb", 3.0)] * 7, cost=25.0)
    r = solve(pb, solver=solver)
    assert verify(pb, r) == []
    assert r.winners == () and r.welfare == 0.0
    assert [x.recarved for x in r.layouts] == [False]


def test_a_gpu_not_recarvable_is_never_recarved() -> None:
    pb = _problem([ALL_7G], [("1g.10gb", 100.0)] * 7, cost=1.0, recarvable=False)
    r = solve(pb)
    assert verify(pb, r) == [] and r.winners == ()
    assert r.layouts[0].recarved is False


def test_a_gpu_with_running_work_is_not_recarved() -> None:
    """A non-preemptible 1g incumbent on the balanced layout: the other free instances serve,
    and the 4g bid (which would need a re-carving) loses however much it offers."""
    inc = Incumbent(
        "run",
        "x",
        1.0,
        (Placement("n", (0,), mig_profile="1g.10gb", mig_start=0),),
        preemptible=False,
    )
    pb = _problem([BALANCED], [("4g.40gb", 1000.0), ("1g.10gb", 5.0)], cost=1.0, incumbents=(inc,))
    r = solve(pb)
    assert verify(pb, r) == []
    assert [w.bid_id for w in r.winners] == ["b1"] and _on(r, "b1")[1:] == ("1g.10gb", 1)
    assert r.layouts[0].recarved is False


def test_a_preempted_gpu_may_be_recarved() -> None:
    """A preemptible incumbent worth 1 on a 7g: evicting it and re-carving for seven 1g worth 3
    each pays (21 - 1 - 2)."""
    inc = Incumbent("run", "x", 1.0, (Placement("n", (0,), mig_profile="7g.80gb", mig_start=0),))
    pb = _problem([ALL_7G], [("1g.10gb", 3.0)] * 7, cost=2.0, incumbents=(inc,))
    r = solve(pb)
    assert verify(pb, r) == []
    assert r.evicted == ("run",) and r.layouts[0].recarved
    assert r.welfare == pytest.approx(21 - 1 - 2)


def test_winners_go_on_existing_instances_without_recarving() -> None:
    """Work that fits the instances that exist never re-carves: the all-1g GPU takes seven 1g
    bids at the layout's own starts, and the layout stays."""
    pb = _problem([ALL_1G], [("1g.10gb", 3.0)] * 7, cost=100.0)
    r = solve(pb)
    assert verify(pb, r) == [] and len(r.winners) == 7
    assert {_on(r, w.bid_id)[2] for w in r.winners} == set(range(7))
    assert r.layouts[0] == dataclasses.replace(r.layouts[0], instances=ALL_1G, recarved=False)


def test_fill_layout_carves_the_rest_into_the_smallest_profile() -> None:
    model = CATALOG[A100]
    assert fill_layout(model, [("3g.40gb", 4)]) == (
        *(MigInstance("1g.10gb", s) for s in range(4)),
        MigInstance("3g.40gb", 4),
    )
    assert fill_layout(model, [("7g.80gb", 0)]) == ALL_7G


def test_realisable_order_finds_the_creation_order_mig_parted_needs() -> None:
    """Created at the lowest free start, 3g first fails (it takes slot 0, leaving one 2g start),
    so the order found starts with a 2g instance."""
    model = CATALOG[A100]
    lay = (MigInstance("2g.20gb", 0), MigInstance("2g.20gb", 2), MigInstance("3g.40gb", 4))
    order, made = realisable_order(model, lay)
    assert order[0] == "2g.20gb" and set(made) == set(lay)
    assert realisable_order(model, BALANCED) is not None


def test_checker_rules_for_layouts() -> None:
    bids = [("1g.10gb", 3.0)] * 9 + [("7g.80gb", 4.0)]
    pb = _problem([ALL_7G, ALL_7G], bids)
    r = solve(pb)
    new = next(i for i, x in enumerate(r.layouts) if x.recarved)
    unmarked = list(r.layouts)
    unmarked[new] = dataclasses.replace(unmarked[new], recarved=False)
    rules = {v.rule for v in verify(pb, dataclasses.replace(r, layouts=tuple(unmarked)))}
    assert {"layout.changed", "welfare"} <= rules
    assert {v.rule for v in verify(pb, dataclasses.replace(r, layouts=r.layouts[:1]))} >= {
        "layout.missing"
    }
    pinned = pin(pb, [("n", 0), ("n", 1)])
    assert "layout.kept" in {v.rule for v in verify(pinned, r)}
    lacking = list(r.layouts)
    lacking[new] = dataclasses.replace(lacking[new], instances=ALL_7G)
    assert "layout.instance" in {
        v.rule for v in verify(pb, dataclasses.replace(r, layouts=tuple(lacking)))
    }


def test_layout_fields_round_trip_and_bad_ones_are_named() -> None:
    pb = _problem([BALANCED, ALL_7G], [("1g.10gb", 3.0)], recarvable=False)
    assert problem_from_dict(problem_to_dict(pb)) == pb
    r = solve(pb)
    assert result_from_dict(result_to_dict(r)) == r
    d = problem_to_dict(pb)
    d["nodes"][0]["gpus"][0]["layout"] = [{"profile": "3g.40gb", "start": 2}]
    with pytest.raises(ProblemError, match=r"nodes\[0\]\.gpus\[0\]\.layout"):
        problem_from_dict(d)
    with pytest.raises(ProblemError, match="layout"):
        Gpu(0, A100, "whole", layout=ALL_7G)
    d = problem_to_dict(pb)
    d["reconfigure_cost"] = -1
    with pytest.raises(ProblemError, match="reconfigure_cost"):
        problem_from_dict(d)


_LAYOUTS = [ALL_7G, ALL_1G, BALANCED, (MigInstance("3g.40gb", 0), MigInstance("3g.40gb", 4))]
_PROFILES = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layouts=st.lists(st.sampled_from(_LAYOUTS), min_size=1, max_size=3),
    bids=st.lists(
        st.tuples(st.sampled_from(_PROFILES), st.integers(1, 30).map(float)),
        min_size=1,
        max_size=12,
    ),
    cost=st.sampled_from([0.5, 4.0, 20.0]),
)
def test_planned_rounds_are_valid_and_never_worse_than_keeping_every_layout(
    layouts: list[tuple[MigInstance, ...]], bids: list[tuple[str, float]], cost: float
) -> None:
    pb = _problem(layouts, bids, cost=cost)
    r = solve(pb)
    assert verify(pb, r) == []
    kept = pin(pb, [("n", i) for i in range(len(layouts))])
    assert r.welfare >= solve(kept).welfare - 1e-9
    model = CATALOG[A100]
    for x in r.layouts:
        if x.recarved:
            assert realisable_order(model, x.instances) is not None, x
