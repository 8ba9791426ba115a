"""The C++ engine through allocator.solvers.native: greedy, local, payments, reasons, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import _core, verify
from allocator.instances import random_problem
from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    Node,
    Placement,
    Problem,
    ProblemError,
    Unit,
    Wallet,
)
from allocator.solvers import solve
from allocator.solvers.assemble import Allocation, welfare
from allocator.solvers.native import NativeEngine


def _whole_node(name: str, n: int, model: str = "H100", **kw: object) -> Node:
    return Node(name, 64000, 512000, gpus=tuple(Gpu(i, model) for i in range(n)), **kw)  # type: ignore[arg-type]


def _bid(i: int, value: float, unit: Unit, wallet: str = "w", **kw: object) -> Bid:
    return Bid(f"b{i}", f"agent{i}", wallet, (Alternative(value, unit, **kw),))  # type: ignore[arg-type]


def _problem(nodes: tuple[Node, ...], bids: tuple[Bid, ...], **kw: object) -> Problem:
    wallets = kw.pop("wallets", (Wallet("w", 1e9),))
    return Problem(nodes, wallets, bids, **kw)  # type: ignore[arg-type]


def test_greedy_picks_by_density_and_places_whole_gpus() -> None:
    """Greedy takes the denser bid first and returns device indices of one node per replica."""
    pb = _problem(
        (_whole_node("n1", 2),),
        (
            _bid(0, 6, Unit("whole")),
            _bid(1, 8, Unit("whole", gpus=2)),
            _bid(2, 1, Unit("whole")),
        ),
    )
    alloc = NativeEngine(pb).greedy()
    assert sorted(alloc.winners) == [0, 2]
    _, (p,) = alloc.winners[0]
    assert p.node == "n1" and p.kind == "whole" and len(p.gpus) == 1
    assert welfare(pb, alloc) == 7


def test_local_fixes_the_greedy_mistake_and_never_loses_welfare() -> None:
    """Local search finds the 2-GPU bid worth 8 that greedy passed over, starting from greedy."""
    pb = _problem(
        (_whole_node("n1", 2),),
        (
            _bid(0, 6, Unit("whole")),
            _bid(1, 8, Unit("whole", gpus=2)),
            _bid(2, 1, Unit("whole")),
        ),
    )
    eng = NativeEngine(pb)
    start = eng.greedy()
    better = eng.local(start, time_limit=2.0, seed=1)
    assert welfare(pb, better) == 8
    assert sorted(better.winners) == [1]


def test_local_is_deterministic_for_a_seed_and_iteration_count() -> None:
    """Two runs with the same seed and iteration budget return the same allocation."""
    pb = random_problem(5, gpus=32, bids=60)
    runs = []
    for _ in range(2):
        eng = NativeEngine(pb)
        runs.append(eng.local(eng.greedy(), time_limit=30.0, seed=3, max_iterations=200))
    assert dict(runs[0].winners) == dict(runs[1].winners)
    assert runs[0].evicted == runs[1].evicted


def test_local_stops_after_patience_moves_without_gain() -> None:
    """Without gains for ``patience`` moves local search stops, long before its time limit (a
    work-based stop: the same count of moves on a quiet and on a loaded machine)."""
    pb = random_problem(1, gpus=16, bids=30)
    eng = NativeEngine(pb)
    start = eng.greedy()
    runs = [eng.local(start, time_limit=600.0, seed=0, patience=400) for _ in range(2)]
    iterations = [r.stats["local_iterations"] for r in runs]
    improvements = runs[0].stats["local_improvements"]
    assert iterations[0] == iterations[1]
    # every gain restarts the count, so at most (gains + 1) * patience moves
    assert 400 <= iterations[0] <= (improvements + 1) * 400


def test_mig_and_share_placements_carry_profile_start_and_milli() -> None:
    """MIG winners get a profile name and a legal start; shares get their milli on one GPU."""
    pb = _problem(
        (
            Node("m", 8000, 64000, gpus=(Gpu(0, "A100-80GB", "mig"),)),
            Node("s", 8000, 64000, gpus=(Gpu(0, "T4", "shared", used_milli=300),)),
        ),
        (
            _bid(0, 5, Unit("mig", profile="4g.40gb")),
            _bid(1, 5, Unit("mig", profile="3g.40gb")),
            _bid(2, 3, Unit("share", milli=700)),
        ),
    )
    alloc = NativeEngine(pb).greedy()
    assert sorted(alloc.winners) == [0, 1, 2]
    (p0,) = alloc.winners[0][1]
    (p1,) = alloc.winners[1][1]
    (p2,) = alloc.winners[2][1]
    assert (p0.mig_profile, p0.mig_start) == ("4g.40gb", 0)
    assert (p1.mig_profile, p1.mig_start) == ("3g.40gb", 4)
    assert (p2.node, p2.gpus, p2.milli) == ("s", (0,), 700)


def test_wallet_budget_binds_greedy_and_local() -> None:
    """Two bids of one wallet whose values exceed its balance together never both win."""
    pb = _problem(
        (_whole_node("n1", 4),),
        (_bid(0, 7, Unit("whole")), _bid(1, 6, Unit("whole"))),
        wallets=(Wallet("w", 10.0),),
    )
    eng = NativeEngine(pb)
    g = eng.greedy()
    loc = eng.local(g, time_limit=1.0, seed=2)
    assert len(g.winners) == 1 and len(loc.winners) == 1
    assert eng.explain(loc)[1][0] == "outbid" or eng.explain(loc)[1][0] == "over_budget"


def test_eviction_only_when_it_pays() -> None:
    """A bid evicts a preemptible incumbent only if worth more than its value + preemption cost."""
    nodes = (_whole_node("n1", 1),)
    inc = (Incumbent("i0", "old", 2.0, (Placement("n1", (0,)),), preemption_cost=1.0),)
    rich = NativeEngine(_problem(nodes, (_bid(0, 5, Unit("whole")),), incumbents=inc)).greedy()
    poor = NativeEngine(_problem(nodes, (_bid(0, 2.5, Unit("whole")),), incumbents=inc)).greedy()
    assert rich.evicted == frozenset({0}) and 0 in rich.winners
    assert poor.evicted == frozenset() and not poor.winners


def test_reasons_cover_every_loser() -> None:
    """Each loser gets exactly one of the four reasons, with numbers."""
    pb = _problem(
        (_whole_node("n1", 2),),
        (
            _bid(0, 10, Unit("whole", gpus=2)),
            _bid(1, 5, Unit("whole"), wallet="poor"),
            _bid(2, 5, Unit("whole", gpus=3)),
            _bid(3, 1, Unit("whole")),
            _bid(4, 1, Unit("whole", gpus=2)),
        ),
        wallets=(Wallet("w", 1e9), Wallet("poor", 1.0)),
        reserve_prices={"H100-80GB": 0.75},
    )
    eng = NativeEngine(pb)
    reasons = eng.explain(eng.greedy())
    assert {b: r for b, (r, _) in reasons.items()} == {
        1: "over_budget",
        2: "does_not_fit",
        3: "outbid",
        4: "below_reserve",
    }
    assert reasons[1][1]["balance"] == 1.0
    assert reasons[2][1]["requested_gpus"] == 3.0


def test_payments_between_reserve_and_value() -> None:
    """Critical payments never exceed the bid and never fall below the reserve cost."""
    pb = _problem(
        (_whole_node("n1", 2),),
        tuple(_bid(i, v, Unit("whole")) for i, v in enumerate((9.0, 7.0, 4.0))),
        reserve_prices={"H100": 2.0},
    )
    eng = NativeEngine(pb)
    alloc = eng.greedy()
    pay = eng.critical_payments(alloc)
    assert sorted(pay) == [0, 1]
    assert pay[0] == pytest.approx(4.0) and pay[1] == pytest.approx(4.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_payments_are_the_same_on_any_number_of_threads(seed: int) -> None:
    """Winners' replays run in parallel without changing a payment (0: one per CPU)."""
    pb = random_problem(seed, gpus=96, bids=300, incumbents=12, wallets=8)
    eng = NativeEngine(pb)
    # Greedy and a local-search allocation (a foreign one for the replays).
    for alloc in (
        eng.greedy(),
        eng.local(eng.greedy(), time_limit=60.0, seed=seed, max_iterations=200),
    ):
        serial = eng.critical_payments(alloc, threads=1)
        assert serial and set(serial) == set(alloc.winners)
        for threads in (3, 0):
            assert eng.critical_payments(alloc, threads=threads) == serial
    one = solve(pb, solver="greedy", threads=1)
    four = solve(pb, solver="greedy", threads=4)
    assert [(w.bid_id, w.payment) for w in four.winners] == [
        (w.bid_id, w.payment) for w in one.winners
    ]


def test_bad_thread_count_names_the_argument() -> None:
    pb = random_problem(0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ProblemError, match="threads"):
            solve(pb, threads=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        NativeEngine(pb).critical_payments(NativeEngine(pb).greedy(), threads=-3)


def test_payments_and_reasons_accept_a_foreign_allocation() -> None:
    """An allocation the engine did not make (e.g. from CP-SAT) is loaded and priced."""
    pb = _problem(
        (_whole_node("n1", 2),),
        (_bid(0, 6, Unit("whole")), _bid(1, 8, Unit("whole", gpus=2))),
    )
    eng = NativeEngine(pb)
    foreign = Allocation({1: (0, (Placement("n1", (0, 1)),))})
    pay = eng.critical_payments(foreign)
    assert 0 <= pay[1] <= 8
    assert eng.explain(foreign) == {0: ("outbid", eng.explain(foreign)[0][1])}


def test_infeasible_allocation_is_a_value_error() -> None:
    """Overlapping placements in a loaded allocation raise ValueError naming the winner."""
    pb = _problem((_whole_node("n1", 1),), (_bid(0, 1, Unit("whole")), _bid(1, 1, Unit("whole"))))
    eng = NativeEngine(pb)
    bad = Allocation({0: (0, (Placement("n1", (0,)),)), 1: (0, (Placement("n1", (0,)),))})
    with pytest.raises(ValueError, match="winners"):
        eng.critical_payments(bad)
    with pytest.raises(ValueError):
        eng.explain(Allocation({0: (0, (Placement("nowhere", (0,)),))}))


def _with(columns: object, **changes: object) -> dict[str, object]:
    """The keyword arguments that rebuild ``columns`` (a core columns struct), with changes."""
    fields = type(columns).FIELDS  # type: ignore[attr-defined]
    kw = {name: getattr(columns, name) for name in fields}
    kw.update(changes)
    return kw


def test_core_rejects_bad_columns_with_value_error() -> None:
    """Malformed columns handed straight to _core raise ValueError naming the field, no crash."""
    pb = _problem((_whole_node("n1", 1),), (_bid(0, 1, Unit("whole")),))
    data = NativeEngine(pb)._lower()
    broken = _core.ProblemColumns(**_with(data, gpu_model=np.array([7], dtype=np.int64)))
    with pytest.raises(ValueError, match="gpu"):
        _core.Engine(broken)
    missing = _with(data)
    del missing["alt_value"]
    with pytest.raises(ValueError, match="alt_value"):
        _core.ProblemColumns(**missing)
    with pytest.raises(ValueError, match="alt_value"):
        _core.ProblemColumns(**_with(data, alt_value=np.zeros((1, 1))))
    with pytest.raises(ValueError, match="alt_value"):
        _core.ProblemColumns(**_with(data, alt_value="many"))
    with pytest.raises(ValueError, match="inc_placements"):
        _core.ProblemColumns(**_with(data, inc_placements=np.zeros(0)))
    with pytest.raises(TypeError, match="alt_valu"):
        _core.ProblemColumns(**_with(data, alt_valu=np.zeros(1)))
    with pytest.raises(ValueError, match="alt_value"):
        data.alt_value = np.zeros((2, 2))
    data.alt_value = np.array([-1.0])
    with pytest.raises(ValueError, match=r"alternatives\[0\].value"):
        _core.Engine(data)
    data.alt_value = np.array([1.0])
    data.alt_kind = np.array([len(_core.UnitKind.__members__)], dtype=np.int64)
    with pytest.raises(ValueError, match="alt_kind: must be a value of UnitKind"):
        _core.Engine(data)
    data.alt_kind = np.array([_core.UnitKind.Whole.value], dtype=np.int64)
    with pytest.raises(ValueError, match="alpha"):
        _core.Engine(data, _core.EngineOptions(alpha=float("nan")))
    _core.validate_problem(data)


def test_core_rejects_bad_allocation_columns() -> None:
    """Allocation columns are checked by field too, placements by their column's path."""
    pb = _problem((_whole_node("n1", 2),), (_bid(0, 1, Unit("whole")),))
    eng = NativeEngine(pb)
    good = eng.core.greedy()
    assert eng.core.welfare(good) == good.welfare == 1.0
    cols = eng.to_columns(eng.greedy())
    placements = _core.PlacementColumns(**_with(cols.placements, kind=np.array([9])))
    with pytest.raises(ValueError, match=r"placements\.kind"):
        eng.core.welfare(_core.AllocationColumns(**_with(cols, placements=placements)))
    with pytest.raises(ValueError, match="evicted"):
        eng.core.welfare(_core.AllocationColumns(**_with(cols, evicted=np.array([0]))))
    with pytest.raises(ValueError, match="win_replica_offsets"):
        eng.core.welfare(
            _core.AllocationColumns(**_with(cols, win_replica_offsets=np.array([0, 2])))
        )
    with pytest.raises(ValueError, match="placements"):
        cols.placements = "nowhere"  # type: ignore[assignment]


def test_model_words_and_core_enums_name_the_same_things() -> None:
    """Every GPU mode, unit kind, locality and loss reason of the model is a member of the core's
    enum of that name and the other way round (a word added on one side only fails here)."""
    from allocator.model import GPU_MODES, LOCALITIES, LOSS_REASONS, UNIT_KINDS
    from allocator.solvers.native import enum_name

    pairs = [
        (GPU_MODES, _core.GpuMode),
        (UNIT_KINDS, _core.UnitKind),
        (LOCALITIES, _core.Locality),
        (LOSS_REASONS, _core.LossReason),
    ]
    for words, enum in pairs:
        assert sorted(enum_name(w) for w in words) == sorted(enum.__members__), enum
        assert len({enum_name(w) for w in words}) == len(words)
    assert enum_name("does_not_fit") == "DoesNotFit"


def _stub_classes() -> dict[str, dict[str, str]]:
    """Class name -> annotated attribute -> annotation text, from allocator/_core.pyi."""
    import ast
    from pathlib import Path

    import allocator

    tree = ast.parse((Path(allocator.__file__).parent / "_core.pyi").read_text())
    out: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    return out


def test_stub_states_every_column_with_its_type() -> None:
    """allocator/_core.pyi names every field of every columns struct, in order, with its type."""
    stub_type = {
        "int64": "npt.NDArray[np.int64]",
        "float64": "npt.NDArray[np.float64]",
        "int": "int",
        "float": "float",
        "PlacementColumns": "PlacementColumns",
    }
    classes = _stub_classes()
    for cls in (_core.PlacementColumns, _core.ProblemColumns, _core.AllocationColumns):
        stub = classes[cls.__name__]
        assert list(stub) == list(cls.FIELDS), cls.__name__
        assert stub == {name: stub_type[t] for name, t in cls.FIELDS.items()}, cls.__name__


def test_options_mirror_the_core_defaults() -> None:
    """EngineOptions and SimAuctionOptions carry the C++ defaults; alpha reaches the engine."""
    opts = _core.EngineOptions()
    assert (opts.alpha, opts.fragment_scale, opts.node_order, len(opts.workload)) == (
        0.75,
        1000.0,
        [],
        0,
    )
    sim = _core.SimAuctionOptions()
    assert sim.engine.alpha == 0.75 and sim.max_iterations == -1 and not sim.local_search
    pb = _problem(
        (_whole_node("n1", 4),), (_bid(0, 8, Unit("whole", gpus=4)), _bid(1, 3, Unit("whole")))
    )
    flat = NativeEngine(pb, alpha=0.0)
    steep = NativeEngine(pb, alpha=1.0)
    assert flat.core.score(0) == 8 and steep.core.score(0) == 2
    assert flat.greedy().winners.keys() == {0} and steep.greedy().winners.keys() == {1}
    workload = _core.Workload(
        cpu_milli=np.array([0]),
        gpus=np.array([1]),
        milli=np.array([500]),
        models=np.array([0], dtype=np.uint64),
        weight=np.array([1.0]),
    )
    assert len(_core.EngineOptions(workload=workload).workload) == 1
    with pytest.raises(ValueError, match="weight"):
        _core.Workload(
            cpu_milli=[0], gpus=[1], milli=[500], models=np.array([0], np.uint64), weight=[-1.0]
        )


def test_results_pass_the_independent_checker() -> None:
    """greedy and local results on random rounds pass allocator.verify."""
    for seed in range(6):
        pb = random_problem(seed, gpus=24, bids=40)
        for solver in ("greedy", "local"):
            result = solve(pb, solver=solver, time_limit=2.0, seed=seed)
            assert verify(pb, result) == [], (seed, solver)


def test_sim_auction_round_takes_its_options() -> None:
    """SimCluster.auction_round clears a round by its options; a local search limited by moves
    (max_iterations) under a time limit that never binds is deterministic, and with no moves it
    is the greedy round."""
    rng = np.random.default_rng(3)
    n_pods = 60
    gpus = rng.integers(1, 3, n_pods)
    milli = np.where(rng.random(n_pods) < 0.5, rng.integers(1, 10, n_pods) * 100, 1000)
    gpus = np.where(milli < 1000, 1, gpus)
    values = rng.random(n_pods) * 4

    def run(options: _core.SimAuctionOptions) -> list[_core.Placed]:
        sim = _core.SimCluster(
            np.full(8, 64000), np.full(8, 1 << 20), np.zeros(8), np.full(8, 4), [16.0]
        )
        sim.set_pods(
            np.full(n_pods, 1000), np.zeros(n_pods), gpus, milli, np.zeros(n_pods, np.uint64)
        )
        return sim.auction_round(np.arange(n_pods), values, options)

    greedy = run(_core.SimAuctionOptions())
    assert greedy == run(_core.SimAuctionOptions(local_search=True, max_iterations=0))
    limited = _core.SimAuctionOptions(
        local_search=True, max_iterations=50, time_limit_s=1e6, seed=7
    )
    assert run(limited) == run(limited)
    assert sum(p is not None for p in greedy) > 0
    steep = _core.SimAuctionOptions(engine=_core.EngineOptions(alpha=2.0))
    assert steep.engine.alpha == 2.0 and run(steep) != greedy
    with pytest.raises(ValueError, match="alpha"):
        run(_core.SimAuctionOptions(engine=_core.EngineOptions(alpha=-1.0)))
