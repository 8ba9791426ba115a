"""The ``gpualloc.io/inventory`` Node annotation: its parser (errors name the field), the NVLink
domains the reader gives whole GPUs from it, and the MIG layouts it exposes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from allocator import solve, verify
from allocator.cluster import Skipped, snapshot
from allocator.cluster.inventory import (
    INVENTORY_ANNOTATION,
    connected_components,
    node_inventory,
    parse_inventory,
)
from allocator.cluster.plan import plan_round
from allocator.model.problem import MigInstance

ROOT = f"metadata.annotations[{INVENTORY_ANNOTATION}]"


def _gpu(index: int, peers: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-{index}",
        "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "product": "NVIDIA H100 80GB HBM3",
        "model": "H100-80GB",
        "memory_mib": 81559,
        "mig": {"current": False, "pending": False},
        "mig_instances": [],
        "nvlink_peers": peers,
        "nvlink_switches": [],
        **extra,
    }


def _document(count: int = 8, group: int = 4) -> dict[str, Any]:
    """``count`` H100s NVLinked in groups of ``group``."""
    gpus = []
    for i in range(count):
        first = i // group * group
        gpus.append(_gpu(i, [j for j in range(first, first + group) if j != i]))
    return {"version": 1, "read_at": "2026-12-01T10:00:00Z", "driver": "580.1", "gpus": gpus}


def _node(name: str, gpus: int, inventory: Any = None, **labels: str) -> dict[str, Any]:
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    meta["labels"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **labels}
    if inventory is not None:
        text = inventory if isinstance(inventory, str) else json.dumps(inventory)
        meta["annotations"] = {INVENTORY_ANNOTATION: text}
    for key, value in labels.items():
        if key.startswith("nvidia.com/mig-") and key.endswith(".count"):
            alloc[key.removesuffix(".count")] = value
    return {"metadata": meta, "status": {"allocatable": alloc}}


def test_domains_are_connected_components_of_links_and_switches() -> None:
    """Peers link GPUs both ways; a switch (any end that is not a GPU) joins those reaching it;
    an isolated GPU is its own domain."""
    assert connected_components([0, 1, 2, 3, 4], [(0, 1), (2, "s1"), (3, "s1")]) == (
        (0, 1),
        (2, 3),
        (4,),
    )
    assert connected_components([2, 0, 1], [(1, 0), (2, 1)]) == ((0, 1, 2),)


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        (lambda d: d.update(version=2), ".version", "not a version this reader knows (1)"),
        (lambda d: d.pop("version"), ".version", "missing"),
        (lambda d: d.update(read_at="yesterday"), ".read_at", "RFC 3339"),
        (lambda d: d.update(gpus={}), ".gpus", "must be an array"),
        (lambda d: d["gpus"][2].update(index=-1), ".gpus[2].index", "integer >= 0"),
        (lambda d: d["gpus"][2].update(index=1), ".gpus[2].index", "GPU 1 appears twice"),
        (lambda d: d["gpus"][1].update(uuid=""), ".gpus[1].uuid", "non-empty string"),
        (lambda d: d["gpus"][1].update(memory_mib="80GB"), ".gpus[1].memory_mib", "integer"),
        (lambda d: d["gpus"][0].update(mig={"current": 1}), ".gpus[0].mig.current", "true"),
        (
            lambda d: d["gpus"][2].update(
                mig={"current": True, "pending": True},
                mig_instances=[{"profile": "3g.40gb", "start": -4, "size": 4}],
            ),
            ".gpus[2].mig_instances[0].start",
            "integer >= 0",
        ),
        (
            lambda d: d["gpus"][2].update(
                mig={"current": True, "pending": True},
                mig_instances=[
                    {"profile": "4g.40gb", "start": 0, "size": 4},
                    {"profile": "3g.40gb", "start": 0, "size": 4},
                ],
            ),
            ".gpus[2].mig_instances[1].start",
            "overlaps 4g.40gb at [0, 4)",
        ),
        (
            lambda d: d["gpus"][2].update(
                mig_instances=[{"profile": "7g.80gb", "start": 0, "size": 8}]
            ),
            ".gpus[2].mig_instances",
            "MIG instances on a GPU with MIG off",
        ),
        (lambda d: d["gpus"][3].update(nvlink_peers=[9]), ".gpus[3].nvlink_peers[0]", "9 is"),
        (lambda d: d["gpus"][3].update(nvlink_peers=[3]), ".gpus[3].nvlink_peers[0]", "3 is"),
        (lambda d: d.update(nvlink_domains=[[0, 1, 2, 3, 4, 5, 6, 7]]), ".nvlink_domains", "not"),
    ],
)
def test_parser_names_the_field(change: Any, field: str, why: str) -> None:
    """Each malformed part of the document is refused with its path under the annotation."""
    doc = _document()
    change(doc)
    with pytest.raises(ValueError) as e:
        parse_inventory(json.dumps(doc), ROOT)
    message = str(e.value)
    assert message.startswith(f"{ROOT}{field}: "), message
    assert why in message


def test_parser_refuses_text_that_is_not_json() -> None:
    """An annotation that is not JSON says so, naming the annotation."""
    with pytest.raises(ValueError, match=r"^metadata\.annotations\[gpualloc\.io/inventory\]: "):
        parse_inventory("{gpus: 8}", ROOT)


def test_parser_ignores_fields_it_does_not_know() -> None:
    """Fields added within version 1 are ignored by this reader."""
    doc = _document(2, 2)
    doc["gpus"][0]["temperature_c"] = 40
    doc["fabric"] = {"clique": "a"}
    assert len(parse_inventory(json.dumps(doc)).gpus) == 2


def test_mig_layouts_are_the_instances_by_gpu() -> None:
    """mig_layouts maps each GPU in MIG mode to its instances (profile, start) by start; GPUs
    with MIG off are not in it."""
    doc = _document(2, 2)
    doc["gpus"][1]["mig"] = {"current": True, "pending": True}
    doc["gpus"][1]["mig_instances"] = [
        {"profile": "3g.40gb", "start": 4, "size": 4},
        {"profile": "2g.20gb", "start": 0, "size": 2},
    ]
    inv = node_inventory(_node("n", 1, doc))
    assert inv is not None
    assert inv.mig_layouts() == {1: (MigInstance("2g.20gb", 0), MigInstance("3g.40gb", 4))}
    assert node_inventory(_node("n", 1)) is None


def test_reader_gives_whole_gpus_their_nvlink_domains() -> None:
    """Eight GPUs in two NVLink groups of four: the reader's GPUs get two domains, and a gang
    asking for 2 x 4 GPUs on one NVLink domain each fits; without the annotation the node is one
    domain, as before."""
    snap = snapshot([_node("n1", 8, _document()), _node("n2", 8)], [], [])
    n1, n2 = snap.problem.nodes
    assert [g.nvlink for g in n1.gpus] == ["nvlink0"] * 4 + ["nvlink1"] * 4
    assert [g.nvlink for g in n2.gpus] == [None] * 8
    assert snap.skipped == ()


def test_reader_skips_node_with_malformed_inventory() -> None:
    """A malformed annotation leaves the node out, naming the field, as other malformed input;
    the other nodes are read."""
    doc = _document()
    doc["gpus"][2]["mig"] = {"current": True, "pending": True}
    doc["gpus"][2]["mig_instances"] = [{"profile": "3g.40gb", "start": "zero", "size": 4}]
    snap = snapshot([_node("bad", 8, doc), _node("good", 8)], [], [])
    assert [n.name for n in snap.problem.nodes] == ["good"]
    assert snap.skipped == (
        Skipped(
            "Node",
            "bad",
            f"{ROOT}.gpus[2].mig_instances[0].start",
            "must be an integer >= 0, got 'zero'",
            "uid-bad",
        ),
    )


def test_reader_keeps_node_whose_inventory_disagrees_and_reports_it() -> None:
    """Seven allocatable GPUs against eight in the inventory (one found unhealthy): which one is
    missing is unknown, so the node stays in one domain, and a kept report says why; the
    round's Warning Event on the node says it is kept."""
    snap = snapshot([_node("n1", 7, _document())], [], [])
    (node,) = snap.problem.nodes
    assert [g.nvlink for g in node.gpus] == [None] * 7
    (report,) = snap.skipped
    assert report.kept and report.kind == "Node" and report.field == f"{ROOT}.gpus"
    assert "8 GPU(s) with MIG off, but status.allocatable[nvidia.com/gpu] is 7" in report.reason
    result = solve(snap.problem)
    notices = [n for n in plan_round(snap, result).notices if n.kind == "Node"]
    assert [(n.reason, n.name, n.uid) for n in notices] == [("Malformed", "n1", "uid-n1")]
    assert "kept: metadata.annotations[gpualloc.io/inventory].gpus: 8 GPU(s)" in notices[0].message


def test_reader_maps_whole_gpus_past_mig_ones() -> None:
    """With GPU 1 in MIG mode (mixed strategy: its instances are nvidia.com/mig-* resources),
    the seven nvidia.com/gpu GPUs are inventory GPUs 0, 2..7: their domains follow; the MIG
    instances' pseudo-GPUs are unchanged (no domain)."""
    doc = _document()
    doc["gpus"][1]["mig"] = {"current": True, "pending": True}
    doc["gpus"][1]["mig_instances"] = [{"profile": "3g.40gb", "start": 0, "size": 4}]
    node = _node("n1", 7, doc, **{"nvidia.com/mig-3g.40gb.count": "1"})
    snap = snapshot([node], [], [])
    (n1,) = snap.problem.nodes
    assert snap.skipped == ()
    assert [g.nvlink for g in n1.gpus[:7]] == ["nvlink0"] * 3 + ["nvlink1"] * 4
    assert n1.gpus[7].model == "H100-80GB-MIG-3g.40gb" and n1.gpus[7].nvlink is None


def test_reader_leaves_single_strategy_instances_alone() -> None:
    """Under the single strategy nvidia.com/gpu counts MIG instances, not GPUs: no domains."""
    doc = _document(1, 1)
    doc["gpus"][0]["mig"] = {"current": True, "pending": True}
    node = _node("n1", 7, doc)
    node["metadata"]["labels"]["nvidia.com/gpu.product"] = "H100-80GB-MIG-1g.10gb"
    snap = snapshot([node], [], [])
    assert [g.nvlink for g in snap.problem.nodes[0].gpus] == [None] * 7
    assert snap.skipped == ()


def test_nvlink_gang_is_placed_inside_a_domain() -> None:
    """A pod asking for 4 GPUs with nvlink locality on a node whose GPUs 0-3 and 4-7 are two
    domains gets four GPUs of one domain; the result verifies."""
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "annotations": {
                "gpualloc.io/bid": "10",
                "gpualloc.io/wallet": "w",
                "gpualloc.io/locality": "nvlink",
            },
        },
        "spec": {
            "schedulerName": "gpu-allocator",
            "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "4"}}}],
        },
        "status": {"phase": "Pending"},
    }
    wallet = {"metadata": {"name": "w", "namespace": "team-a"}, "spec": {"balance": 100}}
    doc = _document()
    snap = snapshot([_node("n1", 8, copy.deepcopy(doc))], [pod], [wallet])
    result = solve(snap.problem)
    assert verify(snap.problem, result) == []
    ((placement,),) = [w.placements for w in result.winners]
    assert placement.gpus in ((0, 1, 2, 3), (4, 5, 6, 7))
