"""Migration variants of the openb replay: moves are real, priced and budgeted, and reported."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from allocator import _core
from allocator.cli import main
from allocator.sim import load_openb_nodes, load_openb_pods, run_replay, summarize
from allocator.sim.policies import registry
from allocator.sim.policies.migrate import MigrateOptions, MigratingPolicy
from allocator.sim.replay import (
    DEFAULT_PARAMS,
    PLACEMENT_POLICIES,
    arrival_order,
    arrival_table,
)


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    """A small openb-format cluster (12 nodes of 4 GPUs, 24 cores) and 200 pods: shares of the
    trace's common sizes and one-GPU pods, so that FGD strands share remainders."""
    rng = random.Random(7)
    nodes = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"n{i},24000,262144,4,G2\n" for i in range(12)
    )
    sizes = [810, 470, 320, 650, 160, 1000, 1000]
    pods = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "".join(
        f"p{i:03d},{rng.choice([1000, 2000, 4000, 6000])},1024,1,{rng.choice(sizes)},\n"
        for i in range(200)
    )
    n, p = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    n.write_text(nodes)
    p.write_text(pods)
    return n, p


def _check_state(sim: _core.SimCluster, table_cpu: np.ndarray, table_milli: np.ndarray) -> int:
    """Recompute every node's free CPU and every GPU's free milli from the pods' placements
    (after all moves); they must match the cluster's and stay within capacity. Returns the
    GPU milli placed."""
    gpu_free = sim.gpu_free_milli()
    cpu_free, _ = sim.node_free()
    used_gpu = np.zeros_like(gpu_free)
    used_cpu = np.zeros_like(cpu_free)
    placed = 0
    for k in range(len(table_cpu)):
        where = sim.placement(k)
        if where is None:
            continue
        node, gpus = where
        used_cpu[node] += table_cpu[k]
        assert len(set(gpus)) == len(gpus)
        for g in gpus:
            used_gpu[g] += table_milli[k]
            placed += int(table_milli[k])
    assert (used_gpu <= 1000).all()
    np.testing.assert_array_equal(used_gpu, 1000 - gpu_free)
    assert placed == sim.used_milli
    return placed


def test_migration_places_more_with_real_moves(trace: tuple[Path, Path]) -> None:
    """fgd-migrate places pods fgd leaves out, by moves the cluster's state shows: every pod
    on a node with the capacity, nothing held twice, the budget kept."""
    n, p = trace
    cluster = load_openb_nodes(n)
    pods = load_openb_pods(p, cluster)
    seen: dict[str, _core.SimCluster] = {}

    def keep(name: str):
        def on_round(sim: _core.SimCluster, _pods: object, _got: object) -> None:
            seen[name] = sim

        return on_round

    base = run_replay(cluster, pods, "fgd", 42, on_round=keep("fgd"))
    moved = run_replay(cluster, pods, "fgd-migrate", 42, on_round=keep("migrate"))
    table = arrival_table(pods, arrival_order(pods, int(cluster.total_gpus) * 1000, 42))
    cpu = table.cpu_milli
    milli = table.gpu_milli_total
    used_base = _check_state(seen["fgd"], cpu, milli)
    used_moved = _check_state(seen["migrate"], cpu, milli)
    cpu_free, _ = seen["migrate"].node_free()
    assert (cpu_free >= 0).all()
    assert moved.moved is not None and moved.moved > 0
    assert moved.moved <= 0.02 * moved.placed
    assert moved.placed_at_100 > base.placed_at_100
    assert summarize(moved)["alloc_at_100"] > summarize(base)["alloc_at_100"]
    assert used_moved >= used_base
    figures = summarize(moved)
    assert figures["pods_moved"] == moved.moved
    assert figures["rescued_at_100"] >= 0
    assert "pods_moved" not in summarize(base)


def test_pattern_migration_moves_for_real_and_diverges_at_the_first_rescue(
    trace: tuple[Path, Path],
) -> None:
    """pattern-migrate: the cluster's use recomputed from the pods' final placements matches
    after its moves, the budget holds, and its placements and curve are pattern's up to the
    first pod placed thanks to moves, more from there."""
    n, p = trace
    cluster = load_openb_nodes(n)
    pods = load_openb_pods(p, cluster)
    seen: dict[str, _core.SimCluster] = {}
    placed: dict[str, list[object]] = {"pattern": [], "pattern-migrate": []}

    def keep(name: str):
        def on_round(sim: _core.SimCluster, _pods: object, got: list[object]) -> None:
            seen[name] = sim
            placed[name].extend(got)

        return on_round

    base = run_replay(cluster, pods, "pattern", 42, on_round=keep("pattern"))
    moved = run_replay(cluster, pods, "pattern-migrate", 42, on_round=keep("pattern-migrate"))
    table = arrival_table(pods, arrival_order(pods, int(cluster.total_gpus) * 1000, 42))
    used_base = _check_state(seen["pattern"], table.cpu_milli, table.gpu_milli_total)
    used_moved = _check_state(seen["pattern-migrate"], table.cpu_milli, table.gpu_milli_total)
    assert used_moved > used_base
    assert moved.moved is not None and 0 < moved.moved <= 0.02 * moved.placed
    first = next(
        k
        for k, (b, m) in enumerate(zip(placed["pattern"], placed["pattern-migrate"], strict=True))
        if b is None and m is not None
    )
    assert placed["pattern"][:first] == placed["pattern-migrate"][:first]
    assert base.allocated[:first] == moved.allocated[:first]
    assert moved.allocated[first] > base.allocated[first]
    assert summarize(moved)["alloc_at_100"] > summarize(base)["alloc_at_100"]
    setup = registry.OpenbSetup(DEFAULT_PARAMS, 42)
    assert registry.get("pattern-migrate", "openb").factory(setup).rule == "pattern"  # type: ignore[attr-defined]
    assert registry.get("fgd-migrate", "openb").factory(setup).rule == "fgd"  # type: ignore[attr-defined]
    pattern_params = replace(DEFAULT_PARAMS, packing="pattern")
    auction = registry.get("auction-migrate", "openb").factory(
        registry.OpenbSetup(pattern_params, 42)
    )
    assert auction.rule == "pattern"  # type: ignore[attr-defined]


def test_budget_and_price_bound_the_moves() -> None:
    """The moves a pod may cost: its worth over the price, the per-pod cap, the run's budget."""

    class _Never:
        round_size = 1
        rounds = 0
        solver_seconds = 0.0

    policy = MigratingPolicy(_Never(), MigrateOptions(move_price=0.3, max_moves=3, budget=0.02))  # type: ignore[arg-type]
    assert policy.allowed(1.0) == 0  # nothing placed yet: no budget
    policy.placed = 1000
    assert policy.allowed(1.0) == 3
    assert policy.allowed(0.47) == 1
    assert policy.allowed(0.16) == 0
    policy.moves = 19
    assert policy.allowed(1.0) == 1
    policy.moves = 20
    assert policy.allowed(1.0) == 0
    with pytest.raises(ValueError, match="move_price"):
        MigrateOptions(move_price=0)


def test_migration_is_a_variant_never_run_by_default(
    trace: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The migration policies run only when named, and report their moves in the summary."""
    assert "fgd-migrate" in registry.names("openb")
    assert "fgd-migrate" not in registry.names("openb", headline=True)
    assert "auction-migrate" not in registry.names("openb", headline=True)
    assert "pattern-migrate" in registry.names("openb")
    assert "pattern-migrate" not in registry.names("openb", headline=True)
    assert "fgd-migrate" not in PLACEMENT_POLICIES
    n, p = trace
    code = main(
        [
            *("simulate", "--nodes", str(n), "--pods", str(p)),
            *("--policies", "fgd,fgd-migrate", "--seeds", "2", "--jobs", "1"),
            *("--json", "--no-progress"),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    got = summary["traces"]["custom"]
    assert "pods_moved" not in got["fgd"]
    assert got["fgd-migrate"]["pods_moved"] > 0
    assert 0 < got["fgd-migrate"]["moved_pct"] <= 2.0


def test_direct_move_frees_a_gpu() -> None:
    """Two 400 shares on two GPUs of one node: a whole-GPU pod fits only after one moves."""
    sim = _core.SimCluster(
        np.array([16000]), np.array([1 << 20]), np.array([0]), np.array([2]), [16.0]
    )
    sim.set_workload(
        np.array([1000, 1000]),
        np.zeros(2, dtype=np.int64),
        np.array([1, 1]),
        np.array([400, 1000]),
        np.zeros(2, dtype=np.uint64),
        np.array([0.5, 0.5]),
    )
    sim.set_pods(
        np.array([1000, 1000, 1000]),
        np.zeros(3, dtype=np.int64),
        np.array([1, 1, 1]),
        np.array([400, 400, 1000]),
        np.zeros(3, dtype=np.uint64),
    )
    sim.assign(0, 0, [0])
    sim.assign(1, 0, [1])
    assert sim.place(2, "fgd") is None
    assert sim.place_with_moves(2, "fgd", max_moves=0) is None
    got = sim.place_with_moves(2, "fgd", max_moves=1)
    assert got is not None
    (node, gpus), moves = got
    assert node == 0 and len(moves) == 1
    assert sim.used_milli == 1800
    assert sim.placement(0) is not None and sim.placement(1) is not None
    assert sim.placement(0)[1] == sim.placement(1)[1] != gpus  # type: ignore[index]
    with pytest.raises(ValueError, match="already placed"):
        sim.place_with_moves(2, "fgd")


@pytest.mark.parametrize(("rule", "moved_to"), [("pattern", (1, [3])), ("fgd", (0, [1]))])
def test_moved_pod_is_placed_by_the_rule(rule: str, moved_to: tuple[int, list[int]]) -> None:
    """A whole-GPU pod displaces a 320 share; the pattern rule puts the share on a free GPU, FGD
    beside a lone 470 (where it spoils a 470 pair)."""
    sim = _core.SimCluster(
        np.array([16000, 2000]),
        np.array([1 << 20, 1 << 20]),
        np.array([0, 0]),
        np.array([2, 2]),
        [16.0],
    )
    sim.set_workload(
        np.array([1000, 1000, 1000]),
        np.zeros(3, dtype=np.int64),
        np.array([1, 1, 1]),
        np.array([1000, 650, 320]),
        np.zeros(3, dtype=np.uint64),
        np.array([0.5, 0.1, 0.4]),
    )
    sim.set_pattern([(320, 270.0), (470, 405.0), (650, 540.0), (810, 810.0), (1000, 810.0)])
    sim.set_pods(
        np.array([1000, 1000, 1000, 8000]),  # node 1 lacks the CPU for the whole-GPU pod
        np.zeros(4, dtype=np.int64),
        np.array([1, 1, 1, 1]),
        np.array([320, 470, 470, 1000]),
        np.zeros(4, dtype=np.uint64),
    )
    sim.assign(0, 0, [0])
    sim.assign(1, 0, [1])
    sim.assign(2, 1, [2])
    assert sim.place(3, rule) is None
    got = sim.place_with_moves(3, rule, max_moves=1)
    assert got is not None
    assert got[0] == (0, [0])
    assert got[1] == [(0, *moved_to)]  # (pod, node, gpus) of each move
    assert sim.placement(0) == moved_to
