"""The simulator's policy registry (allocator.sim.policies), solve options and progress events."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from allocator import _core
from allocator.cli import main
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
)
from allocator.sim import (
    PLACEMENT_POLICIES,
    ProgressEvent,
    load_openb_nodes,
    load_openb_pods,
    replay,
)
from allocator.sim import policies as registry
from allocator.sim.experiment import POLICIES, simulate
from allocator.sim.mixed import MIXED_POLICIES
from allocator.sim.policies import MixedSetup, OpenbSetup, SimPlacement
from allocator.sim.policies.schedulers import FifoPolicy
from allocator.sim.replay import DEFAULT_PARAMS, run_replay
from allocator.sim.traces import data_dir
from allocator.solvers import SolveParams, allocate, solve

SCORED = ("random", "fifo", "bestfit", "dotprod", "gpupacking", "fgd", "kai", "pattern")
#: Variants reported apart (test_sim_migrate.py).
MIGRATE = ("fgd-migrate", "pattern-migrate", "auction-migrate")
MIG_DAY = ("fixed-all-1g", "fixed-balanced", "fixed-all-7g", "fixed-best", "planned")
SPOT = data_dir() / "spot-gpu" / "node_info_df.csv"


def test_registry_lists_every_policy() -> None:
    """Every scenario's policies are in the one registry, and the old lists derive from it."""
    assert set(registry.names("openb")) == {*SCORED, "auction", *MIGRATE}
    assert set(registry.names("openb", headline=True)) == {*SCORED, "auction"}
    assert registry.names("mixed") == ("auction", "fifo", "kai")
    assert set(registry.names("mig-day")) == {*MIG_DAY}
    assert set(registry.names()) == {*SCORED, "auction", *MIGRATE, *MIG_DAY}
    assert set(PLACEMENT_POLICIES) == set(SCORED)
    assert registry.names("openb") == POLICIES
    assert registry.names("mixed") == MIXED_POLICIES
    auction = registry.get("auction", "openb")
    assert auction.per_mode and auction.label("batch") == "auction-batch"
    assert registry.get("fgd", "openb").label("batch") == "fgd"
    assert not registry.get("auction", "mixed").per_mode


def test_registry_rejects_bad_names() -> None:
    """Unknown policies name the known ones; duplicates and per-mode mixed policies are refused."""
    with pytest.raises(ValueError, match=r"policy: unknown 'nope' for mixed \(known: auction"):
        registry.get("nope", "mixed")
    with pytest.raises(ValueError, match="scenario"):
        registry.get("fgd", "trace")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("fgd", "openb", lambda s: s)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="per_mode"):
        registry.register("x", "mixed", FifoPolicy, per_mode=True)
    with pytest.raises(ValueError, match="comma"):
        registry.register("a,b", "mixed", FifoPolicy)


class _Delegate:
    """A test policy: places through a built-in score, counting the pods it was given."""

    round_size = 1
    seen = 0

    def __init__(self, setup: OpenbSetup) -> None:
        self.rounds = 0
        self.solver_seconds = 0.0

    def place(
        self, sim: _core.SimCluster, pods: Sequence[int], values: np.ndarray
    ) -> list[SimPlacement | None]:
        _Delegate.seen += len(pods)
        return [sim.place(k, "bestfit") for k in pods]


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    """A small openb-format cluster (20 nodes of 4 GPUs) and 150 one-GPU pods."""
    rng = random.Random(3)
    nodes = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"n{i},32000,65536,4,G2\n" for i in range(20)
    )
    pods = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "".join(
        f"p{i},{rng.choice([2000, 4000])},1024,1,1000,\n" for i in range(150)
    )
    n, p = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    n.write_text(nodes)
    p.write_text(pods)
    return n, p


@pytest.fixture
def delegate() -> Iterator[str]:
    """``delegate`` registered for openb during the test."""
    _Delegate.seen = 0
    registry.register("delegate", "openb", _Delegate, summary="test: bestfit by another name")
    try:
        yield "delegate"
    finally:
        registry.unregister("delegate", "openb")


def test_registered_policy_runs_in_simulate(
    trace: tuple[Path, Path], delegate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy registered at run time is a valid ``--policies`` name, runs, and is reported."""
    assert delegate in registry.names("openb")
    assert delegate in replay.PLACEMENT_POLICIES  # read from the registry when asked
    n, p = trace
    code = main(
        [
            *("simulate", "--nodes", str(n), "--pods", str(p), "--policies", f"bestfit,{delegate}"),
            *("--seeds", "2", "--jobs", "1", "--json", "--no-progress"),
        ]
    )
    assert code == 0
    table = json.loads(capsys.readouterr().out)["traces"]["custom"]
    assert set(table) == {"bestfit", delegate}
    assert _Delegate.seen == 2 * 104  # every arrival of both seeds: 130% of 80 GPUs
    figures = ("alloc_at_100", "alloc_at_130", "frag_rate_at_90", "runs")
    assert {k: table[delegate][k] for k in figures} == {k: table["bestfit"][k] for k in figures}


def test_registered_mixed_policy_runs_in_simulate_mixed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mixed policy registered at run time runs in the mixed scenario like the built-ins."""
    if not SPOT.is_file():
        pytest.skip("spot-gpu node list not present")
    seen: list[int] = []

    class Counting(FifoPolicy):
        def __init__(self, setup: MixedSetup) -> None:
            super().__init__(setup)
            assert setup.params == SolveParams(solver="greedy", time_limit=0.2)

        def __call__(self, nodes, extra_models, pending, running, round_index):  # type: ignore[no-untyped-def]
            seen.append(round_index)
            return super().__call__(nodes, extra_models, pending, running, round_index)

    registry.register("fifo2", "mixed", Counting)
    try:
        assert (
            main(
                [
                    *("simulate", "--scenario", "mixed", "--policies", "fifo,fifo2"),
                    *("--seeds", "1", "--gpus", "64", "--rounds", "3", "--json", "--no-progress"),
                ]
            )
            == 0
        )
    finally:
        registry.unregister("fifo2", "mixed")
    table = json.loads(capsys.readouterr().out)["policies"]
    assert seen == [0, 1, 2]
    assert table["fifo2"] == table["fifo"] | {
        k: table["fifo2"][k] for k in ("decision_mean_s", "decision_max_s")
    }


def test_library_prints_nothing_and_reports_progress(
    trace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """simulate writes nothing to stdout or stderr; the callback sees every run finish."""
    events: list[ProgressEvent] = []
    simulate(
        [],
        ["fgd", "auction"],
        2,
        nodes=trace[0],
        pods=trace[1],
        out_dir=tmp_path / "out",
        progress=events.append,
    )
    assert capsys.readouterr() == ("", "")
    assert [e.done for e in events] == [1, 2, 3, 4, 5, 6]
    assert {e.total for e in events} == {6} and {e.unit for e in events} == {"runs"}
    assert any("auction-batch" in e.item for e in events)


def test_mixed_prints_nothing_and_reports_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """simulate_mixed and run_mixed write nothing; their callbacks see runs and rounds."""
    if not SPOT.is_file():
        pytest.skip("spot-gpu node list not present")
    from allocator.sim.mixed import run_mixed
    from allocator.sim.mixed_report import simulate_mixed

    runs: list[ProgressEvent] = []
    simulate_mixed(["fifo", "kai"], 1, gpus=64, rounds=3, out_dir=tmp_path, progress=runs.append)
    rounds: list[ProgressEvent] = []
    run_mixed("auction", seed=1, gpus=64, rounds=3, progress=rounds.append)
    assert capsys.readouterr() == ("", "")
    assert [(e.done, e.total, e.unit) for e in runs] == [(1, 2, "runs"), (2, 2, "runs")]
    assert [(e.done, e.total, e.unit) for e in rounds] == [(k, 3, "rounds") for k in (1, 2, 3)]


def test_replay_params(trace: tuple[Path, Path]) -> None:
    """The replay's auction takes its options from SolveParams: the default equals
    DEFAULT_PARAMS, local search runs, and solvers the simulator cannot run are refused."""
    cluster = load_openb_nodes(trace[0])
    pods = load_openb_pods(trace[1], cluster)
    base = run_replay(cluster, pods, "auction", 42, mode="batch", batch=10)
    same = run_replay(cluster, pods, "auction", 42, mode="batch", batch=10, params=DEFAULT_PARAMS)
    assert base.allocated == same.allocated and base.rounds == 11  # 104 arrivals (130% of 80 GPUs)
    events: list[ProgressEvent] = []
    local = run_replay(
        cluster,
        pods,
        "auction",
        42,
        mode="batch",
        batch=10,
        params=SolveParams(solver="local", time_limit=0.05),
        progress=events.append,
    )
    assert local.placed >= base.placed
    assert events[-1] == ProgressEvent(104, 104, "pods", "auction-batch") and len(events) == 104
    with pytest.raises(ValueError, match="solver: must be greedy or local"):
        run_replay(cluster, pods, "auction", 42, params=SolveParams(solver="cpsat"))
    with pytest.raises(ValueError, match="node_order"):
        run_replay(cluster, pods, "auction", 42, params=DEFAULT_PARAMS.replace(node_order=(1, 0)))


def test_simulate_cli_params_file(
    trace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--params FILE`` overrides the scenario's defaults field by field; a bad field exits 2."""
    n, p = trace
    good = tmp_path / "good.toml"
    good.write_text('solver = "local"\ntime_limit = 0.01\n')
    args = ["simulate", "--nodes", str(n), "--pods", str(p), "--policies", "auction"]
    args += ["--seeds", "1", "--jobs", "1", "--json", "--no-progress"]
    assert main([*args, "--params", str(good)]) == 0
    assert set(json.loads(capsys.readouterr().out)["traces"]["custom"]) == {
        "auction-online",
        "auction-batch",
    }
    bad = tmp_path / "bad.toml"
    bad.write_text("speed = 3\n")
    assert main([*args, "--params", str(bad)]) == 2
    assert "speed" in capsys.readouterr().err
    exact = tmp_path / "exact.toml"
    exact.write_text('solver = "cpsat"\n')
    assert main([*args, "--params", str(exact)]) == 2
    assert "greedy or local" in capsys.readouterr().err


def test_allocate_is_what_solve_allocates() -> None:
    """allocator.solvers.allocate (the baselines' engine call) gives solve()'s winners and
    evictions, without building a Result."""
    node = Node("n0", gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    params = SolveParams(solver="greedy", alpha=0.0)
    problem = Problem(
        nodes=(node,),
        wallets=(Wallet("w", 100.0),),
        bids=(
            Bid("a", "a", "w", (Alternative(3.0, Unit("whole")),)),
            Bid("b", "b", "w", (Alternative(2.0, Unit("whole", gpus=2)),)),
        ),
        incumbents=(Incumbent("old", "o", value=1.0, placements=(Placement("n0", (1,)),)),),
    )
    alloc = allocate(problem, params)
    result = solve(problem, params=params)
    assert {problem.bids[b].id: reps for b, (_a, reps) in alloc.winners.items()} == {
        w.bid_id: w.placements for w in result.winners
    }
    assert [problem.incumbents[i].id for i in sorted(alloc.evicted)] == list(result.evicted)
