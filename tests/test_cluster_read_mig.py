"""The Kubernetes reader on MIG nodes and pods: mixed and single strategies as pseudo-GPUs,
MIG bids restricted to their profile, incumbents on instances, malformed MIG input skipped."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from allocator import solve, verify
from allocator.cluster import snapshot
from allocator.cluster.read import Snapshot, mig_model_name, mig_profile, mig_resource
from allocator.model import problem_from_dict, problem_to_dict

WALLET = {"metadata": {"name": "w", "namespace": "team-a"}, "spec": {"balance": 1000}}
BID = {"gpualloc.io/wallet": "w"}


def _node(name: str, product: str, resources: dict[str, str], **labels: str) -> dict[str, Any]:
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110", **resources}
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"nvidia.com/gpu.product": product, **labels},
        },
        "status": {"allocatable": alloc},
    }


def _mixed(name: str, product: str = "A100-SXM4-80GB", **resources: str) -> dict[str, Any]:
    """A mixed-strategy node: ``resources`` maps ``gpu`` or a profile (``1g.10gb``) to a count."""
    alloc = {("nvidia.com/gpu" if k == "gpu" else mig_resource(k)): v for k, v in resources.items()}
    return _node(name, product, alloc, **{"nvidia.com/mig.strategy": "mixed"})


def _pod(
    name: str,
    requests: dict[str, str],
    bid: str = "1",
    node: str | None = None,
    scheduler: str = "gpu-allocator",
    gpus: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    annotations = {**BID, "gpualloc.io/bid": bid}
    if gpus is not None:
        annotations["gpualloc.io/gpus"] = gpus
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "main", "resources": {"requests": requests}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"uid-{name}",
            "annotations": annotations,
            "labels": labels or {},
        },
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


def _models(snap: Snapshot, node: str) -> list[tuple[int, str, str]]:
    n = snap.problem.node(node)
    return [(g.index, g.model, g.mode) for g in n.gpus]


def _memory(snap: Snapshot, model: str) -> float:
    return snap.problem.model(model).memory_gb


def test_resource_names_and_profiles() -> None:
    """Profiles and the device plugin's resource names map both ways, '+me' written '.me'."""
    assert mig_profile("nvidia.com/mig-3g.40gb") == "3g.40gb"
    assert mig_profile("nvidia.com/mig-1g.10gb.me") == "1g.10gb+me"
    assert mig_profile("nvidia.com/gpu") is None and mig_profile("nvidia.com/mig-big") is None
    assert mig_resource("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    assert mig_model_name("H100-80GB", "1g.10gb") == "H100-80GB-MIG-1g.10gb"
    assert mig_model_name("H100-80GB", "1g.10gb", single=True) == "H100-80GB-MIG-1g.10gb-single"


def test_mixed_node_offers_its_instances_after_its_gpus() -> None:
    """Under the mixed strategy, nvidia.com/gpu counts the GPUs with MIG off (indices first) and
    each nvidia.com/mig-<profile>: c gives c whole pseudo-GPUs of <product>-MIG-<profile>,
    ordered by profile name; memory from GFD's label when present, else the catalog's; a stale
    profile at 0 and an alias of the product are fine (the catalog's name is used); the Problem
    dumps and loads back."""
    node = _mixed("m", "A100-80GB", gpu="1", **{"3g.40gb": "1", "1g.10gb": "2", "2g.20gb": "0"})
    node["status"]["allocatable"]["nvidia.com/mig-1g.10gb.me"] = "1"
    node["metadata"]["labels"]["nvidia.com/mig-1g.10gb.memory"] = "9728"
    snap = snapshot([node], [], [])
    assert snap.skipped == ()
    one, media, three = (
        mig_model_name("A100-SXM4-80GB", p) for p in ("1g.10gb", "1g.10gb+me", "3g.40gb")
    )
    assert _models(snap, "m") == [
        (0, "A100-SXM4-80GB", "whole"),
        (1, one, "whole"),
        (2, one, "whole"),
        (3, media, "whole"),
        (4, three, "whole"),
    ]
    assert _memory(snap, one) == 9.5 and _memory(snap, three) == 40 and _memory(snap, media) == 10
    assert problem_from_dict(problem_to_dict(snap.problem)) == snap.problem  # a replayable dump


def test_product_unknown_to_the_catalog_takes_memory_from_the_profile_name() -> None:
    """A product the catalog does not know is not checked for its profiles; an instance's memory
    is GFD's label, else the <M>gb of its name."""
    node = _mixed("m", "NVIDIA-A100-80GB-PCIe", **{"1g.10gb": "2", "3g.40gb": "1"})
    node["metadata"]["labels"]["nvidia.com/mig-3g.40gb.memory"] = "40192"
    snap = snapshot([node], [], [])
    assert snap.skipped == ()
    assert _memory(snap, "NVIDIA-A100-80GB-PCIe-MIG-1g.10gb") == 10
    assert _memory(snap, "NVIDIA-A100-80GB-PCIe-MIG-3g.40gb") == pytest.approx(39.25)


def test_mig_pods_get_instances_of_their_profile_and_gpu_pods_real_gpus() -> None:
    """On a mixed node with 1 GPU, three 1g.10gb and one 3g.40gb instance: a 2-GPU pod does not
    fit (instances are not GPUs, whatever it bids), a 1-GPU pod gets GPU 0, a pod asking for two
    1g.10gb instances gets two, the next such pod does not fit in the one left, a gang of two
    3g.40gb pods does not fit in one instance, a single 3g.40gb pod does; the result verifies."""
    nodes = [_mixed("m", gpu="1", **{"1g.10gb": "3", "3g.40gb": "1"})]
    one, three = (mig_model_name("A100-SXM4-80GB", p) for p in ("1g.10gb", "3g.40gb"))
    gang = {"gpualloc.io/gang": "pair"}
    pods = [
        _pod("whole2", {"nvidia.com/gpu": "2"}, "100"),
        _pod("whole1", {"nvidia.com/gpu": "1"}, "5"),
        _pod("mig-a", {"nvidia.com/mig-1g.10gb": "2"}, "9"),
        _pod("mig-b", {"nvidia.com/mig-1g.10gb": "2"}, "3"),
        _pod("pair-0", {"nvidia.com/mig-3g.40gb": "1"}, "50", labels=gang),
        _pod("pair-1", {"nvidia.com/mig-3g.40gb": "1"}, "50", labels=gang),
        _pod("three", {"nvidia.com/mig-3g.40gb": "1"}, "2"),
    ]
    snap = snapshot(nodes, pods, [WALLET])
    assert snap.skipped == ()
    alts = {b.id: b.alternatives[0] for b in snap.problem.bids}
    assert alts["team-a/mig-a"].models == (one,) and alts["team-a/mig-a"].unit.gpus == 2
    assert alts["team-a/whole1"].models == ("A100-SXM4-80GB",)
    assert alts["team-a/gang/pair"].replicas == 2 and alts["team-a/gang/pair"].models == (three,)
    result = solve(snap.problem, solver="greedy")
    assert verify(snap.problem, result) == []
    won = {w.bid_id: [pl.gpus for pl in w.placements] for w in result.winners}
    assert won == {"team-a/whole1": [(0,)], "team-a/mig-a": [(1, 2)], "team-a/three": [(4,)]}
    lost = {loss.bid_id for loss in result.losers}
    assert lost == {"team-a/whole2", "team-a/mig-b", "team-a/gang/pair"}


def test_single_strategy_instances_are_nvidia_gpu_and_never_mixed_ones() -> None:
    """Under the single strategy nvidia.com/gpu: 7 are seven 1g.5gb instances that a
    nvidia.com/gpu pod gets; a nvidia.com/mig-1g.5gb pod only gets a mixed node's instance
    (the kubelet would refuse it elsewhere), and a nvidia.com/gpu pod never gets that one."""
    single = _node(
        "s",
        "A100-SXM4-40GB-MIG-1g.5gb",
        {"nvidia.com/gpu": "7"},
        **{"nvidia.com/mig.strategy": "single"},
    )
    mixed = _mixed("m", "A100-SXM4-40GB", **{"1g.5gb": "1"})
    pods = [
        _pod("gpu-a", {"nvidia.com/gpu": "4"}, "10"),
        _pod("gpu-b", {"nvidia.com/gpu": "4"}, "8"),
        _pod("mig-a", {"nvidia.com/mig-1g.5gb": "1"}, "6"),
        _pod("mig-b", {"nvidia.com/mig-1g.5gb": "1"}, "4"),
    ]
    snap = snapshot([single, mixed], pods, [WALLET])
    assert snap.skipped == ()
    single_model = mig_model_name("A100-SXM4-40GB", "1g.5gb", single=True)
    assert {g.model for g in snap.problem.node("s").gpus} == {single_model}
    assert _memory(snap, single_model) == 5
    result = solve(snap.problem, solver="greedy")
    assert verify(snap.problem, result) == []
    won = {w.bid_id: w.placements[0].node for w in result.winners}
    assert won == {"team-a/gpu-a": "s", "team-a/mig-a": "m"}


def test_running_mig_pods_hold_instances_of_their_profile() -> None:
    """A MIG pod placed by another scheduler holds the lowest free instance of its profile, ours
    the one its annotation names (a bad annotation is reported and the pod kept, not
    preemptible, at the lowest free one); a pending pod cannot get the instances they hold, and
    a pod holding more instances than the node has left is skipped naming the field."""
    nodes = [_mixed("m", gpu="1", **{"1g.10gb": "3", "3g.40gb": "1"})]
    mig = {"nvidia.com/mig-1g.10gb": "1"}
    pods = [
        _pod("ours", mig, "4", node="m", gpus="3"),
        _pod("theirs", mig, node="m", scheduler="default-scheduler"),
        _pod("too-many", {"nvidia.com/mig-1g.10gb": "2"}, node="m", scheduler="other"),
        _pod("wrong", mig, node="m", gpus="0"),
        _pod("want", mig, "1000"),
    ]
    snap = snapshot(nodes, pods, [WALLET])
    incs = {i.id: i for i in snap.problem.incumbents}
    assert incs["team-a/ours"].placements[0].gpus == (3,) and incs["team-a/ours"].preemptible
    assert incs["team-a/theirs"].placements[0].gpus == (1,)
    assert not incs["team-a/theirs"].preemptible
    assert incs["team-a/wrong"].placements[0].gpus == (2,)
    assert not incs["team-a/wrong"].preemptible
    assert {(s.name, s.field) for s in snap.skipped} == {
        ("team-a/too-many", "spec.nodeName"),
        ("team-a/wrong", "metadata.annotations[gpualloc.io/gpus]"),
    }
    result = solve(snap.problem, solver="greedy")
    assert verify(snap.problem, result) == []
    # Every instance is held: only ours can make room, worth it at 1000 against 4.
    assert [w.bid_id for w in result.winners] == ["team-a/want"]
    assert set(result.evicted) == {"team-a/ours"}
    assert result.winners[0].placements[0].gpus == (3,)


def test_a_pod_asking_for_a_profile_no_node_offers_does_not_fit() -> None:
    """A profile the catalog knows but no node offers is a bid that loses as not fitting."""
    snap = snapshot(
        [_mixed("m", **{"1g.10gb": "7"})], [_pod("p", {"nvidia.com/mig-3g.40gb": "1"})], [WALLET]
    )
    assert snap.skipped == ()
    result = solve(snap.problem, solver="greedy")
    assert [(loss.bid_id, loss.reason) for loss in result.losers] == [("team-a/p", "does_not_fit")]


@pytest.mark.parametrize(
    ("node", "field", "reason"),
    [
        (
            _mixed("bad", **{"1g.5gb": "2"}),
            "status.allocatable[nvidia.com/mig-1g.5gb]",
            "A100-SXM4-80GB has no MIG profile '1g.5gb'",
        ),
        (
            _mixed("bad", **{"1g.10gb": "-1"}),
            "status.allocatable[nvidia.com/mig-1g.10gb]",
            "must be a whole number >= 0, got -1",
        ),
        (
            _mixed("bad", "T4", **{"1g.10gb": "1"}),
            "status.allocatable[nvidia.com/mig-1g.10gb]",
            "T4 has no MIG profile '1g.10gb'",
        ),
        (
            _node("bad", "A100-SXM4-80GB-MIG-2g.99gb", {"nvidia.com/gpu": "3"}),
            "metadata.labels[nvidia.com/gpu.product]",
            "A100-SXM4-80GB has no MIG profile '2g.99gb'",
        ),
        (
            _node("bad", "X-MIG-huge", {"nvidia.com/gpu": "3"}),
            "metadata.labels[nvidia.com/gpu.product]",
            "'huge' is not a MIG profile name",
        ),
        (
            _mixed("bad", **{"1g.10gb": "2", "gpu": "-2"}),
            "status.allocatable[nvidia.com/gpu]",
            "must be a whole number >= 0, got -2",
        ),
        (
            {
                **_mixed("bad", **{"1g.10gb": "2"}),
                "metadata": {
                    "name": "bad",
                    "uid": "uid-bad",
                    "labels": {
                        "nvidia.com/gpu.product": "A100-SXM4-80GB",
                        "nvidia.com/mig-1g.10gb.memory": "lots",
                    },
                },
            },
            "metadata.labels[nvidia.com/mig-1g.10gb.memory]",
            "not a positive number of MiB: 'lots'",
        ),
    ],
)
def test_malformed_mig_node_is_skipped_naming_the_field(
    node: dict[str, Any], field: str, reason: str
) -> None:
    """A node with a profile its product does not have, a negative count or a bad memory label
    is left out naming the field; another node is read and a pod is still placed there."""
    good = _mixed("good", **{"1g.10gb": "1"})
    snap = snapshot([node, good], [_pod("p", {"nvidia.com/mig-1g.10gb": "1"})], [WALLET])
    assert [n.name for n in snap.problem.nodes] == ["good"]
    assert [(s.kind, s.name, s.field, s.reason, s.uid) for s in snap.skipped] == [
        ("Node", "bad", field, reason, "uid-bad")
    ]
    result = solve(snap.problem, solver="greedy")
    assert [(w.bid_id, w.placements[0].node) for w in result.winners] == [("team-a/p", "good")]


@pytest.mark.parametrize(
    ("label", "model"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100-SXM4-80GB"),  # GFD with recent drivers
        ("A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-A30", "A30-24GB"),
    ],
)
def test_product_labels_with_the_vendor_prefix_are_catalog_models(label: str, model: str) -> None:
    """GPU Feature Discovery writes NVML's name with dashes (``NVIDIA-A100-SXM4-80GB``): the
    catalog model is found, so MIG profiles are checked against its table and whole GPUs are the
    catalog's model, not an unknown one."""
    profile = "1g.6gb" if model == "A30-24GB" else "1g.10gb"
    snap = snapshot([_mixed("n1", product=label, gpu="1", **{profile: "2"})], [], [WALLET])
    assert not snap.skipped
    assert _models(snap, "n1") == [
        (0, model, "whole"),
        (1, mig_model_name(model, profile), "whole"),
        (2, mig_model_name(model, profile), "whole"),
    ]
    assert snap.problem.extra_models == tuple(
        m for m in snap.problem.extra_models if m.name == mig_model_name(model, profile)
    )
    bad = snapshot([_mixed("n2", product=label, **{"7g.99gb": "1"})], [], [WALLET])
    assert [s.name for s in bad.skipped] == ["n2"]  # the product's table has no such profile


def test_find_model_reads_nvml_and_gfd_names() -> None:
    from allocator.model import find_model

    assert find_model("NVIDIA A100-SXM4-80GB").name == "A100-SXM4-80GB"  # type: ignore[union-attr]
    assert find_model("Tesla-T4").name == "T4"  # type: ignore[union-attr]
    assert find_model("Tesla T4").name == "T4"  # type: ignore[union-attr]
    assert find_model("NVIDIA-L40S").name == "L40S"  # type: ignore[union-attr]
    assert find_model("NVIDIA-RTX-PRO-6000") is None


def test_instances_count_as_their_share_of_a_gpu() -> None:
    """A MIG instance offered as a device is a whole pseudo-GPU worth its compute share in
    GPU-equivalents (1g of 7: 1/7): reserve costs, clearing prices and utilisation use it, in
    the greedy and the exact solver alike, and verify agrees."""
    node = _mixed("m", **{"1g.10gb": "7"})
    pods = [
        _pod("cheap", {"nvidia.com/mig-1g.10gb": "1"}, "0.5"),
        _pod("fair", {"nvidia.com/mig-1g.10gb": "2"}, "3"),
    ]
    snap = snapshot([node], pods, [WALLET])
    one = mig_model_name("A100-SXM4-80GB", "1g.10gb")
    assert snap.problem.model(one).whole_equivalent == pytest.approx(1 / 7)
    # 7 per GPU-equivalent: an instance costs at least 1, two at least 2.
    problem = dataclasses.replace(snap.problem, reserve_prices={one: 7.0})
    for solver in ("greedy", "cpsat"):
        result = solve(problem, solver=solver, time_limit=5.0)
        assert verify(problem, result) == [], solver
        assert [w.bid_id for w in result.winners] == ["team-a/fair"], solver
        assert result.winners[0].payment == pytest.approx(2.0), solver
        (loser,) = result.losers
        assert (loser.bid_id, loser.reason) == ("team-a/cheap", "below_reserve"), solver
        assert result.utilisation[one] == pytest.approx(2 / 7), solver
        assert result.clearing_prices[one] == pytest.approx(7.0), solver
    # The file format carries it (and drops the default of 1).
    again = problem_from_dict(problem_to_dict(problem))
    assert again.model(one).whole_equivalent == pytest.approx(1 / 7)
    assert "whole_equivalent" not in str(
        [m for m in problem_to_dict(problem)["extra_models"] if m["name"] == "A100-SXM4-80GB"]
    )


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "1", True])
def test_whole_equivalent_must_be_positive(bad: object) -> None:
    from allocator.model import ProblemError, whole_gpu_model

    with pytest.raises(ProblemError, match="whole_equivalent"):
        whole_gpu_model("X-MIG-1g.5gb", 5.0, whole_equivalent=bad)  # type: ignore[arg-type]
