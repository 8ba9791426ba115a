"""The pattern rule: the pattern program's net values (allocator.solvers.patterns), the
simulator's ``pattern`` policy, and the engine packing by it (``packing="pattern"``) in the
simulator's auction and through :func:`allocator.solve`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import _core, solve, verify
from allocator.cli import main
from allocator.examples import demo_problem
from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    Node,
    Placement,
    Problem,
    Unit,
    Wallet,
    problem_to_dict,
)
from allocator.sim.bound import allocation_bound
from allocator.solvers import SolveParams
from allocator.solvers.native import round_values
from allocator.solvers.patterns import best_pattern, demand_values, solve_patterns


def test_openb_like_mix_values() -> None:
    """A GPU is worth what its best pattern collects: with whole GPUs, lone 810s (whose 190 no
    item fills), 470 pairs and 650 + 320, every pattern of the optimum sums to the GPU's price."""
    milli = np.array([1000, 810, 470, 650, 320])
    gpus = np.ones(5, dtype=np.int64)
    weight = np.array([40.0, 10.0, 8.0, 3.0, 3.0])
    v = demand_values(milli, gpus, weight, 100)
    assert set(v) == {320, 470, 650, 810, 1000}
    assert v[810] == pytest.approx(810.0)  # the marginal item: not all fit, price 0
    assert v[1000] == pytest.approx(v[810])
    assert 2 * v[470] == pytest.approx(v[810])
    assert v[650] + v[320] == pytest.approx(v[810])


def test_values_of_a_mix_that_fits_are_zero() -> None:
    """Without scarcity of GPUs every item packs and is worth its dual price: no net value."""
    prog = solve_patterns(np.array([300, 500]), np.array([2.0, 2.0]), 10.0)
    assert prog.gpu_price == pytest.approx(0.0)
    assert all(w == pytest.approx(0.0) for w in prog.net_values().values())


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 20).map(lambda k: 50 * k), min_size=1, max_size=25),
    st.integers(1, 6),
)
def test_program_matches_the_ceiling(sizes: list[int], bins: int) -> None:
    """The program's optimum is the ceiling's (which certifies it with its own prices)."""
    distinct, counts = np.unique(np.array(sizes), return_counts=True)
    prog = solve_patterns(distinct, counts.astype(float), float(bins))
    ceiling = allocation_bound(np.array(sizes), bins)
    assert prog.objective == pytest.approx(min(ceiling.milli, sum(sizes), 1000 * bins), abs=1e-3)


def test_knapsack_respects_counts() -> None:
    value, copies = best_pattern(np.array([600, 300]), np.array([5, 1]), np.array([0.0, 0.0]))
    assert copies.tolist() == [1, 1] and value == pytest.approx(900.0)  # not three 300s


def test_bad_program_input() -> None:
    with pytest.raises(ValueError, match="distinct"):
        solve_patterns(np.array([300, 300]), np.array([1.0, 1.0]), 2.0)
    with pytest.raises(ValueError, match="GPUs"):
        solve_patterns(np.array([300]), np.array([1.0]), 0.0)
    assert demand_values(np.array([0]), np.array([0]), np.array([1.0]), 4) == {}


def _sim_with_lone_470() -> _core.SimCluster:
    """One node of two GPUs, GPU 0 holding a 470 share; the openb mix in which FGD pairs the
    next 320 with it; pods: the 470 (row 0) and a 320 (row 1)."""
    sim = _core.SimCluster([64000], [1 << 20], [0], [2], [16.0])
    sim.set_random_ties(False)
    sim.set_workload(
        np.array([100, 100, 100]),
        np.zeros(3, dtype=np.int64),
        np.array([1, 1, 1]),
        np.array([1000, 650, 320]),
        np.zeros(3, dtype=np.uint64),
        np.array([0.5, 0.1, 0.4]),
    )
    sim.set_pattern([(230, 202.5), (320, 270.0), (470, 405.0), (650, 540.0), (810, 810.0)])
    sim.set_pods(
        np.array([100, 100]),
        np.zeros(2, dtype=np.int64),
        np.array([1, 1]),
        np.array([470, 320]),
        np.zeros(2, dtype=np.uint64),
    )
    sim.assign(0, 0, [0])
    return sim


@pytest.mark.parametrize(("packing", "gpu"), [("fgd", 0), ("pattern", 1)])
def test_auction_round_packs_by_the_rule(packing: str, gpu: int) -> None:
    """The engine in a simulator round: FGD's packing pairs the 320 with the lone 470 (a 210
    gap); the pattern rule keeps that 530 gap for a 470 and opens the free GPU."""
    sim = _sim_with_lone_470()
    got = sim.auction_round(
        np.array([1]),
        np.array([0.32]),
        _core.SimAuctionOptions(engine=_core.EngineOptions(packing=packing)),
    )
    assert got == [(0, [gpu])]
    assert sim.pattern_values[-1] == (810, 810.0)


@pytest.mark.parametrize(("policy", "gpu"), [("fgd", 0), ("pattern", 1)])
def test_sim_policy_packs_by_the_rule(policy: str, gpu: int) -> None:
    assert _sim_with_lone_470().place(1, policy) == (0, [gpu])


def test_engine_options_round_trip() -> None:
    o = _core.EngineOptions(packing="pattern", pattern_values=[(470, 405.0)], reserve_weight=1.0)
    assert (o.packing, o.pattern_values, o.reserve_weight) == ("pattern", [(470, 405.0)], 1.0)
    with pytest.raises(ValueError, match="packing"):
        _core.EngineOptions(packing="ss")
    with pytest.raises(ValueError, match="pattern_values"):
        _core.EngineOptions(pattern_values=[(470, 500.0)])


def _share_round() -> Problem:
    """Two nodes of two shared GPUs; bids that fill them exactly (1000, 810, 470 + 470,
    650 + 320)."""
    gpus = (Gpu(0, "A100-SXM4-80GB", mode="shared"), Gpu(1, "A100-SXM4-80GB", mode="shared"))
    nodes = tuple(Node(f"n{i}", cpu_milli=64000, memory_mib=1 << 18, gpus=gpus) for i in range(2))
    bids = []
    for k, (milli, n) in enumerate([(470, 2), (320, 1), (650, 1), (810, 1), (1000, 1)]):
        for j in range(n):
            unit = Unit("whole", gpus=1) if milli == 1000 else Unit("share", milli=milli)
            bids.append(
                Bid(f"b{k}-{j}", "a", "w", (Alternative(milli / 1000, unit, cpu_milli=1000),))
            )
    return Problem(nodes=nodes, wallets=(Wallet("w", 100.0),), bids=tuple(bids))


def test_solve_with_pattern_packing_verifies() -> None:
    """The Kubernetes path: solve() reads packing from SolveParams; the round's own bids give
    the values; the result passes the independent checker."""
    pb = _share_round()
    values = round_values(pb)
    assert set(values) == {320, 470, 650, 810, 1000}
    for params in (SolveParams(packing="pattern"), SolveParams(packing="pattern", solver="greedy")):
        result = solve(pb, params=params)
        assert verify(pb, result) == []
        assert len(result.winners) == len(pb.bids)  # 3.72 GPUs of bids that fill 4 GPUs
    demo = demo_problem()
    assert verify(demo, solve(demo, params=SolveParams(packing="pattern"))) == []


def _held_470_round() -> Problem:
    """The round of tests/k8s/test_round.py's packing test: a node of two shared GPUs, GPU 0
    holding a 470 share that cannot be preempted; a 320 and a 470 bid."""
    gpus = tuple(Gpu(i, "H100-80GB", mode="shared") for i in range(2))
    held = Placement("n0", (0,), milli=470)
    return Problem(
        nodes=(Node("n0", cpu_milli=128000, memory_mib=1 << 20, gpus=gpus),),
        wallets=(Wallet("w", 50.0),),
        bids=tuple(
            Bid(f"b{m}", "a", "w", (Alternative(m / 1000, Unit("share", milli=m), cpu_milli=1000),))
            for m in (320, 470)
        ),
        incumbents=(Incumbent("held", "x", 0.47, (held,), cpu_milli=1000, preemptible=False),),
    )


@pytest.mark.parametrize(
    ("packing", "beside"), [(None, "b320"), ("fgd", "b320"), ("pattern", "b470")]
)
def test_solve_packing_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], packing: str | None, beside: str
) -> None:
    """`gpu-allocator solve --packing`: FGD (the default) puts the 320 beside the held 470; the
    pattern rule pairs the two 470s and opens GPU 1 for the 320."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(problem_to_dict(_held_470_round())), encoding="utf-8")
    flag = [] if packing is None else ["--packing", packing]
    assert main(["solve", str(path), "--solver", "greedy", "--json", *flag]) == 0
    winners = json.loads(capsys.readouterr().out)["winners"]
    gpus = {w["bid_id"]: w["placements"][0]["gpus"] for w in winners}
    assert gpus[beside] == [0] and sorted(gpus.values()) == [[0], [1]], gpus


def test_solve_packing_flag_rejects_an_unknown_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--packing", "ss"])
    assert exit_info.value.code == 2
    assert "--packing: invalid choice: 'ss'" in capsys.readouterr().err
