"""Simulator: trace loaders, the one-pod-at-a-time policies, the FGD replay and auction rounds."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from allocator import _core, verify
from allocator.cli import main
from allocator.sim import (
    PLACEMENT_POLICIES,
    TraceError,
    arrival_order,
    load_openb_nodes,
    load_openb_pods,
    resolve_trace,
    run_replay,
    summarize,
    typical_workload,
)
from allocator.sim.replay import arrival_table
from allocator.sim.rounds import round_problem_and_result
from allocator.solvers import SolveParams

NODES_CSV = "sn,cpu_milli,memory_mib,gpu,model\n"
PODS_CSV = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"


def _cluster(nodes: list[tuple[int, int, int]], models: int = 1) -> _core.SimCluster:
    """SimCluster of (cpu_milli, gpus, model) nodes with ample memory."""
    cpu = np.array([n[0] for n in nodes])
    return _core.SimCluster(
        cpu,
        np.full(len(nodes), 1 << 20),
        np.array([n[2] for n in nodes]),
        np.array([n[1] for n in nodes]),
        [16.0] * models,
    )


def _pods(sim: _core.SimCluster, rows: list[tuple[int, int, int, int]]) -> None:
    """Load pods given as (cpu_milli, gpus, milli, model mask)."""
    sim.set_pods(
        np.array([r[0] for r in rows]),
        np.zeros(len(rows), dtype=np.int64),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        np.array([r[3] for r in rows], dtype=np.uint64),
    )


def _workload(sim: _core.SimCluster, shapes: list[tuple[int, int, int, float]]) -> None:
    """Target workload of (cpu_milli, gpus, milli, weight)."""
    sim.set_workload(
        np.array([s[0] for s in shapes]),
        np.zeros(len(shapes), dtype=np.int64),
        np.array([s[1] for s in shapes]),
        np.array([s[2] for s in shapes]),
        np.zeros(len(shapes), dtype=np.uint64),
        np.array([s[3] for s in shapes]),
    )


def test_fifo_takes_first_feasible_node_and_gpu() -> None:
    """fifo is first fit: node 0 lacks CPU, so node 1 and its first GPU with room."""
    sim = _cluster([(1000, 2, 0), (8000, 2, 0), (8000, 2, 0)])
    _pods(sim, [(4000, 1, 500, 0)])
    assert sim.place(0, "fifo") == (1, [2])


def test_bestfit_prefers_least_leftover() -> None:
    """bestfit picks the node left fullest (a 1-GPU node over idle 2-GPU nodes)."""
    sim = _cluster([(8000, 2, 0), (8000, 1, 0), (8000, 2, 0)])
    sim.set_random_ties(False)
    _pods(sim, [(4000, 1, 1000, 0)])
    assert sim.place(0, "bestfit") == (1, [2])


def test_gpupacking_prefers_an_already_shared_gpu() -> None:
    """gpupacking puts a share on a partly used GPU rather than an idle node."""
    sim = _cluster([(8000, 2, 0), (8000, 2, 0)])
    sim.set_random_ties(False)
    _pods(sim, [(1000, 1, 300, 0), (1000, 1, 300, 0)])
    sim.assign(0, 1, [3])  # node 1, its second GPU
    assert sim.place(1, "gpupacking") == (1, [3])


def test_kai_binpack_fills_the_most_allocated_node() -> None:
    """kai (KAI's bin-packing) puts a whole-GPU pod on the node with most GPU already used."""
    sim = _cluster([(64000, 4, 0), (64000, 4, 0), (64000, 4, 0)])
    sim.set_random_ties(False)
    _pods(sim, [(1000, 1, 1000, 0), (1000, 2, 1000, 0), (1000, 1, 1000, 0)])
    sim.assign(0, 0, [0])
    sim.assign(1, 2, [8, 9])
    assert sim.place(2, "kai") == (2, [10])


def test_fgd_fills_the_gap_a_share_left() -> None:
    """With a workload of 500-milli shares and whole GPUs, fgd puts a 500 share on the GPU
    with exactly 500 free (no fragment left) rather than splitting an idle GPU."""
    sim = _cluster([(64000, 2, 0), (64000, 2, 0)])
    sim.set_random_ties(False)
    _workload(sim, [(1000, 1, 500, 0.5), (1000, 1, 1000, 0.5)])
    _pods(sim, [(1000, 1, 500, 0), (1000, 1, 500, 0)])
    sim.assign(0, 1, [2])
    assert sim.place(1, "fgd") == (1, [2])
    assert sim.gpu_free_milli().tolist() == [1000, 1000, 0, 1000]


def test_fragment_counts_cpu_starved_gpus() -> None:
    """A node without CPU for any task counts all its idle milli as fragment."""
    sim = _cluster([(500, 2, 0), (64000, 2, 0)])
    _workload(sim, [(1000, 1, 1000, 1.0)])
    assert sim.node_fragment(0) == pytest.approx(2000.0)
    assert sim.node_fragment(1) == pytest.approx(0.0)


def test_filters_cpu_model_and_whole_gpus() -> None:
    """A pod needs CPU, an allowed model and, for whole GPUs, fully free ones."""
    sim = _cluster([(8000, 2, 0), (8000, 2, 1)], models=2)
    _pods(sim, [(1000, 1, 200, 0), (9000, 1, 100, 0), (1000, 2, 1000, 1 << 0), (1000, 1, 100, 2)])
    sim.assign(0, 0, [0])
    assert sim.place(1, "fifo") is None  # CPU
    assert sim.place(2, "fifo") is None  # model 0 has no two fully free GPUs left
    assert sim.place(3, "fifo") == (1, [2])  # only model 1 allowed


@pytest.mark.parametrize("policy", PLACEMENT_POLICIES)
def test_bad_placement_is_rejected_state_kept(policy: str) -> None:
    """An illegal assign raises ValueError naming the placement and changes nothing."""
    sim = _cluster([(8000, 1, 0)])
    _pods(sim, [(1000, 1, 1000, 0), (1000, 1, 1000, 0)])
    assert sim.place(0, policy) == (0, [0])
    before = sim.gpu_free_milli().tolist()
    with pytest.raises(ValueError, match="placement"):
        sim.assign(1, 0, [0])
    assert sim.gpu_free_milli().tolist() == before
    assert sim.used_milli == 1000


def _write(tmp: Path, nodes: str, pods: str) -> tuple[Path, Path]:
    n, p = tmp / "nodes.csv", tmp / "pods.csv"
    n.write_text(nodes)
    p.write_text(pods)
    return n, p


def test_loader_reads_openb_format(tmp_path: Path) -> None:
    """Nodes and pods load with models, shares, whole GPUs and gpu_spec masks."""
    n, p = _write(
        tmp_path,
        NODES_CSV + "a,32000,65536,2,T4\nb,64000,131072,8,G2\n",
        PODS_CSV + "p0,4000,1024,1,500,\np1,8000,2048,2,1000,G2\np2,1000,512,0,0,\n",
    )
    c = load_openb_nodes(n)
    pods = load_openb_pods(p, c)
    assert c.models == ("T4", "G2") and c.total_gpus == 10
    assert pods.milli.tolist() == [500, 1000, 0]
    assert pods.models.tolist() == [0, 2, 0]


@pytest.mark.parametrize(
    ("nodes", "pods", "match"),
    [
        (NODES_CSV + "a,32000,65536,x,T4\n", PODS_CSV, r"nodes.csv:2: gpu: not a number"),
        ("sn,cpu_milli,gpu,model\n", PODS_CSV, r"missing column\(s\) memory_mib"),
        (NODES_CSV + "a,1,1,1,T4\na,1,1,1,T4\n", PODS_CSV, "duplicate node name"),
        (NODES_CSV + "a,1,1,1,T4\n", PODS_CSV + "p,1,1,2,500,\n", "multi-GPU pod must take"),
        (NODES_CSV + "a,1,1,1,T4\n", PODS_CSV + "p,-5,1,1,500,\n", r"pods.csv:2: cpu_milli"),
    ],
)
def test_loader_errors_name_file_line_column(
    tmp_path: Path, nodes: str, pods: str, match: str
) -> None:
    """A bad trace row is a TraceError naming the file, line and column."""
    n, p = _write(tmp_path, nodes, pods)
    with pytest.raises(TraceError, match=match):
        load_openb_pods(p, load_openb_nodes(n))


def test_unknown_trace_name_lists_known_ones() -> None:
    """A short name that does not exist says which ones do."""
    with pytest.raises(TraceError, match="openb-default"):
        resolve_trace("openb-nope")


@pytest.fixture(scope="module")
def default_trace():  # type: ignore[no-untyped-def]
    n, p = resolve_trace("openb-default")
    cluster = load_openb_nodes(n)
    return cluster, load_openb_pods(p, cluster)


def test_arrival_order_inflates_to_130_percent(default_trace) -> None:  # type: ignore[no-untyped-def]
    """Originals come first in a shuffled order, clones after, to just under 130%."""
    cluster, pods = default_trace
    cap = cluster.total_gpus * 1000
    order = arrival_order(pods, cap, 42)
    assert sorted(order[: len(pods)].tolist()) == list(range(len(pods)))
    total = int(pods.gpu_milli_total[order].sum())
    assert 1.29 * cap < total <= 1.3 * cap
    assert arrival_order(pods, cap, 42).tolist() == order.tolist()
    assert arrival_order(pods, cap, 43).tolist() != order.tolist()


def test_typical_workload_covers_95_percent(default_trace) -> None:  # type: ignore[no-untyped-def]
    """FGD's target workload: the most frequent shapes up to 95% of pods, normalised."""
    _, pods = default_trace
    tw = typical_workload(pods)
    assert tw["weight"].sum() == pytest.approx(1.0)
    assert 30 <= len(tw["weight"]) <= 40  # 35 shapes on the default trace
    assert (tw["gpus"] == 0).any()  # CPU-only shapes count


@pytest.mark.parametrize("policy", [*PLACEMENT_POLICIES, "auction"])
def test_short_replay_keeps_invariants(default_trace, policy: str) -> None:  # type: ignore[no-untyped-def]
    """A 1,500-pod slice under every policy: placed + failed = arrived, allocation never above
    arrived workload or 100%, and the metrics stay in range."""
    cluster, pods = default_trace
    curve = run_replay(cluster, pods, policy, 42, mode="batch", batch=50, limit=1500)
    assert curve.placed + sum(curve.failed.values()) == curve.pods == 1500
    a = np.array(curve.arrived)
    al = np.array(curve.allocated)
    assert (al <= a + 1e-9).all() and (al <= 100.0).all()
    assert (np.diff(a) >= 0).all()
    assert all(0 <= f <= 100 for f in curve.frag_rate)
    assert al[-1] > 0.95 * a[-1]  # at ~18% arrived almost everything fits


def test_online_auction_places_as_fgd(default_trace) -> None:  # type: ignore[no-untyped-def]
    """A round per pod has nothing to trade off: with FGD's workload the engine's packer makes
    FGD's choices, ties included (first node in the seeded order, first GPU in the node), so
    the curves agree row by row up to 100% arrived (seed 44 diverged while the engine broke
    equal steps inside a node by best fit)."""
    cluster, pods = default_trace
    fgd = run_replay(cluster, pods, "fgd", 44, limit=8400)
    auction = run_replay(cluster, pods, "auction", 44, mode="online", limit=8400)
    assert fgd.arrived[-1] > 99.0
    assert auction.allocated == fgd.allocated
    assert auction.fragment == fgd.fragment
    assert auction.failed == fgd.failed


def test_online_auction_places_as_pattern(default_trace) -> None:  # type: ignore[no-untyped-def]
    """With ``packing="pattern"`` the engine's packer makes the ``pattern`` policy's choices (the
    same rule in the C++ core, the trace's pattern values passed with the workload hint; CPU-only
    pods by the policy's score), ties included: the curves agree row by row to 100% arrived."""
    cluster, pods = default_trace
    pattern = run_replay(cluster, pods, "pattern", 44, limit=8400)
    auction = run_replay(
        cluster,
        pods,
        "auction",
        44,
        mode="online",
        limit=8400,
        params=SolveParams(solver="greedy", time_limit=1.0, packing="pattern"),
    )
    assert pattern.arrived[-1] > 99.0
    assert auction.allocated == pattern.allocated
    assert auction.fragment == pattern.fragment
    assert auction.failed == pattern.failed


def test_auction_rounds_pass_verify(default_trace) -> None:  # type: ignore[no-untyped-def]
    """Every auction round of a replay slice, rebuilt as Problem and Result, passes verify."""
    cluster, pods = default_trace
    order = arrival_order(pods, cluster.total_gpus * 1000, 7)
    table = arrival_table(pods, order)
    checked = []

    def check(sim, round_pods, got) -> None:  # type: ignore[no-untyped-def]
        if len(checked) >= 6:
            return
        cpu, mem = sim.node_free()
        values = [float(table.gpus[i] * table.milli[i]) / 1000.0 + 1e-3 for i in round_pods]
        problem, result = round_problem_and_result(
            cluster,
            sim.gpu_free_milli(),
            cpu,
            mem,
            table,
            round_pods,
            values,
            got,
            f"r{len(checked)}",
        )
        assert verify(problem, result) == []
        checked.append(len(result.winners))

    run_replay(cluster, pods, "auction", 7, mode="batch", batch=400, limit=2400, on_round=check)
    assert len(checked) == 6 and sum(checked) > 1000


def test_verify_catches_a_tampered_round(default_trace) -> None:  # type: ignore[no-untyped-def]
    """The rebuilt round is checked for real: moving a pod onto another's whole GPU fails."""
    cluster, pods = default_trace
    order = arrival_order(pods, cluster.total_gpus * 1000, 7)
    table = arrival_table(pods, order)
    whole = [i for i in range(len(table)) if table.gpus[i] == 1 and table.milli[i] == 1000][:2]
    free = np.full(cluster.total_gpus, 1000)
    free[[0, 1]] = 0  # node 0's two GPUs, one pod each
    cpu = cluster.cpu_milli - table.cpu_milli[whole].sum()
    mem = cluster.memory_mib - table.memory_mib[whole].sum()
    cpu[1:] = cluster.cpu_milli[1:]
    mem[1:] = cluster.memory_mib[1:]
    problem, result = round_problem_and_result(
        cluster, free, cpu, mem, table, whole, [1.0, 1.0], [(0, [0]), (0, [1])], "r"
    )
    assert verify(problem, result) == []
    second = result.winners[1]
    moved = dataclasses.replace(
        second, placements=(dataclasses.replace(second.placements[0], gpus=(0,)),)
    )
    tampered = dataclasses.replace(result, winners=(result.winners[0], moved))
    assert verify(problem, tampered) != []


def test_simulate_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --json` on trace files prints per policy the three headline figures and
    writes CSV, JSON and the summary."""
    rng = random.Random(3)
    nodes = NODES_CSV + "".join(f"n{i},32000,65536,4,G2\n" for i in range(20))
    rows = [
        f"p{i},{rng.choice([2000, 4000])},1024,1,{rng.choice([300, 500, 1000])},\n"
        for i in range(150)
    ]
    n, p = _write(tmp_path, nodes, PODS_CSV + "".join(rows))
    out = tmp_path / "res"
    code = main(
        [
            "simulate",
            "--nodes",
            str(n),
            "--pods",
            str(p),
            "--policies",
            "fgd,auction",
            "--seeds",
            "2",
            "--jobs",
            "1",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    table = summary["traces"]["custom"]
    assert set(table) == {"fgd", "auction-online", "auction-batch"}
    ceiling = summary["ceilings"]["custom"]
    for entry in table.values():
        assert 0 < entry["alloc_at_100"] <= 100 and entry["runs"] == 2
        assert entry["alloc_at_100_max"] <= ceiling["alloc_at_100_max"] + 1e-9
    assert ceiling["alloc_at_100_min"] <= ceiling["alloc_at_100"] <= ceiling["alloc_at_100_max"]
    assert (out / "summary.csv").exists()
    assert (out / "runs" / "custom" / "fgd" / "seed42.csv").exists()
    if importlib.util.find_spec("matplotlib") is not None:  # installed by ./scripts/test
        assert (out / "alloc_custom.png").stat().st_size > 1000


def test_simulate_cli_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown trace or policy: exit code 2 and a message naming it."""
    assert main(["simulate", "--trace", "openb-nope", "--no-progress"]) == 2
    assert "openb-nope" in capsys.readouterr().err
    assert main(["simulate", "--policies", "magic", "--no-progress"]) == 2
    assert "magic" in capsys.readouterr().err


def test_summary_matches_replay(default_trace) -> None:  # type: ignore[no-untyped-def]
    """summarize averages the rows whose arrived % rounds to the point."""
    cluster, pods = default_trace
    curve = run_replay(cluster, pods, "fifo", 42, limit=3000)
    s = summarize(curve)
    assert np.isnan(s["alloc_at_100"])  # 3,000 pods never reach 100% arrived


def test_simulate_cli_mixed_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --scenario mixed` runs every policy and writes per-run JSON and the summary."""
    code = main(
        [
            "simulate",
            "--scenario",
            "mixed",
            "--seeds",
            "1",
            "--gpus",
            "64",
            "--rounds",
            "4",
            "--out",
            str(tmp_path),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["policies"]) == {"auction", "fifo", "kai"}
    for entry in summary["policies"].values():
        assert 0.0 <= entry["alloc_mean"] <= 1.0 and entry["arrived"] > 0
    assert (tmp_path / "mixed" / "kai" / "seed1.json").exists()
    rows = list(csv.DictReader((tmp_path / "mixed" / "auction" / "seed1.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]
    capacity = {round(float(r["allocated"]) / float(r["allocation"]), 3) for r in rows}
    assert len(capacity) == 1 and capacity.pop() <= 64  # the fleet cut: whole nodes, <= 64 GPUs
    assert all(0.5 < float(r["allocation"]) <= 1.0 for r in rows)
    table = list(csv.DictReader((tmp_path / "mixed_summary.csv").open()))
    assert {r["policy"] for r in table} == {"auction", "fifo", "kai"}
    assert summary["spread"] == 0.7  # research gangs bid a topology-free alternative by default
    assert main(["simulate", "--scenario", "mixed", "--policies", "nope", "--no-progress"]) == 2
    capsys.readouterr()
    base = ["simulate", "--scenario", "mixed", "--seeds", "1", "--gpus", "64", "--rounds", "2"]
    assert main([*base, "--spread", "1.5", "--no-progress"]) == 2
    assert "spread" in capsys.readouterr().err
    assert main(["simulate", "--spread", "0.5", "--seeds", "1", "--no-progress"]) == 2
    assert "--spread" in capsys.readouterr().err
    assert main([*base, "--spread", "0", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["spread"] == 0.0
