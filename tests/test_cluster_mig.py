"""How a round sees a MIG node (``allocator.cluster.mig.read_mig_node``): which nodes are
plannable, and where their layout comes from (the layout we recorded, NVML's placements in the
inventory annotation, or the advertised instances spread evenly)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from allocator.cluster.inventory import INVENTORY_ANNOTATION
from allocator.cluster.mig import (
    LAYOUT_ANNOTATION,
    PENDING_ANNOTATION,
    read_mig_node,
)
from allocator.model.problem import MigInstance

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SIZES = {"1g.10gb": 1, "2g.20gb": 2, "3g.40gb": 4, "4g.40gb": 4, "7g.80gb": 8}


def _inventory(gpus: list[list[tuple[str, int]]], read_at: datetime) -> str:
    return json.dumps(
        {
            "version": 1,
            "read_at": read_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "driver": "580.1",
            "gpus": [
                {
                    "index": i,
                    "uuid": f"GPU-{i}",
                    "pci_bus_id": f"00000000:{0x18 + i:02X}:00.0",
                    "product": "NVIDIA A100-SXM4-80GB",
                    "model": "A100-SXM4-80GB",
                    "memory_mib": 81920,
                    "mig": {"current": True, "pending": True},
                    "mig_instances": [
                        {"profile": p, "start": s, "size": SIZES[p]} for p, s in instances
                    ],
                    "nvlink_peers": [],
                    "nvlink_switches": [],
                }
                for i, instances in enumerate(gpus)
            ],
        }
    )


def _node(
    counts: dict[str, int], gpus: int = 2, config: str = "custom", **annotations: str
) -> dict[str, Any]:
    """An A100-SXM4-80GB node of ``gpus`` GPUs advertising ``counts`` instances per profile."""
    labels = {
        "nvidia.com/gpu.product": "A100-SXM4-80GB",
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig.config": config,
        "nvidia.com/mig.config.state": "success",
    }
    alloc = {"cpu": "64", "nvidia.com/gpu": "0"}
    alloc.update({f"nvidia.com/mig-{p}": str(n) for p, n in counts.items()})
    meta = {"name": "a100", "labels": labels, "annotations": annotations}
    return {"metadata": meta, "status": {"allocatable": alloc}}


def _read(node: dict[str, Any], busy: bool = False) -> Any:
    return read_mig_node(node, busy=busy, now=NOW, hold_s=1800)


def _recorded(gpus: list[list[tuple[str, int]]], at: datetime, config: str = "custom") -> str:
    return json.dumps({"config": config, "gpus": gpus, "at": at.isoformat()})


def test_even_spread_when_nothing_else_is_known() -> None:
    """``all-7g.80gb`` on two GPUs: one 7g instance each, at start 0."""
    mig = _read(_node({"7g.80gb": 2}, config="all-7g.80gb"))
    assert mig.status == "plannable"
    assert mig.gpus == ((MigInstance("7g.80gb", 0),),) * 2


def test_uneven_instances_without_a_source_are_not_plannable() -> None:
    """Three 3g instances on two GPUs cannot be spread evenly: the node stays as it is."""
    mig = _read(_node({"3g.40gb": 3}))
    assert (mig.status, mig.why) == ("static", "its layout is not known")


def test_inventory_gives_exact_placements() -> None:
    """NVML's starts are used, not the lowest free ones an even spread would assume, and an
    uneven layout becomes plannable."""
    gpus = [[("1g.10gb", 6)], [("1g.10gb", 3)]]
    mig = _read(_node({"1g.10gb": 2}, **{INVENTORY_ANNOTATION: _inventory(gpus, NOW)}))
    assert mig.gpus == ((MigInstance("1g.10gb", 6),), (MigInstance("1g.10gb", 3),))
    uneven = [[("3g.40gb", 0), ("3g.40gb", 4)], [("4g.40gb", 0), ("3g.40gb", 4)]]
    node = _node({"3g.40gb": 3, "4g.40gb": 1}, **{INVENTORY_ANNOTATION: _inventory(uneven, NOW)})
    assert _read(node).gpus == (
        (MigInstance("3g.40gb", 0), MigInstance("3g.40gb", 4)),
        (MigInstance("4g.40gb", 0), MigInstance("3g.40gb", 4)),
    )


def test_inventory_that_disagrees_or_is_malformed_is_not_used() -> None:
    """An inventory whose instances are not what the device plugin advertises (stale), that
    breaks the placement rules, or that does not parse, falls back to the even spread."""
    stale = _inventory([[("7g.80gb", 0)], [("7g.80gb", 0)]], NOW)
    assert (
        _read(_node({"1g.10gb": 2}, **{INVENTORY_ANNOTATION: stale})).gpus
        == ((MigInstance("1g.10gb", 0),),) * 2
    )
    illegal = _inventory([[("3g.40gb", 2)], [("3g.40gb", 0)]], NOW)  # 3g starts at 0 or 4
    assert (
        _read(_node({"3g.40gb": 2}, **{INVENTORY_ANNOTATION: illegal})).gpus
        == ((MigInstance("3g.40gb", 0),),) * 2
    )
    assert _read(_node({"3g.40gb": 2}, **{INVENTORY_ANNOTATION: "{"})).status == "plannable"


def test_the_newer_of_inventory_and_recorded_layout_wins() -> None:
    """Our recorded layout (written when a change succeeded) against NVML's reading: the one
    read later is the node's layout; a recorded layout is used when there is no inventory."""
    old = NOW - timedelta(hours=2)
    mine = [[["1g.10gb", 0]], [["1g.10gb", 0]]]
    read = [[("1g.10gb", 5)], [("1g.10gb", 4)]]
    exact = ((MigInstance("1g.10gb", 5),), (MigInstance("1g.10gb", 4),))
    ours = ((MigInstance("1g.10gb", 0),),) * 2
    newer_read = {
        LAYOUT_ANNOTATION: _recorded(mine, old - timedelta(minutes=5)),
        INVENTORY_ANNOTATION: _inventory(read, old),
    }
    assert _read(_node({"1g.10gb": 2}, **newer_read)).gpus == exact
    newer_mine = {
        LAYOUT_ANNOTATION: _recorded([[["1g.10gb", 2]], [["1g.10gb", 1]]], old),
        INVENTORY_ANNOTATION: _inventory(read, old - timedelta(minutes=5)),
    }
    assert _read(_node({"1g.10gb": 2}, **newer_mine)).gpus == (
        (MigInstance("1g.10gb", 2),),
        (MigInstance("1g.10gb", 1),),
    )
    only_mine = {LAYOUT_ANNOTATION: _recorded(mine, old)}
    assert _read(_node({"1g.10gb": 2}, **only_mine)).gpus == ours
    other_config = {LAYOUT_ANNOTATION: _recorded([[["1g.10gb", 2]], [["1g.10gb", 1]]], old, "x")}
    assert _read(_node({"1g.10gb": 2}, **other_config)).gpus == ours


def test_busy_pending_held_and_unknown_nodes() -> None:
    """A node with work is static, one with a change in flight offers nothing, one changed
    within the hold time is static, and non-MIG or single-strategy nodes are not MIG nodes."""
    assert _read(_node({"7g.80gb": 2}), busy=True).status == "static"
    pending = _node({"7g.80gb": 2}, **{PENDING_ANNOTATION: "{}"})
    assert _read(pending).status == "pending"
    recent = {LAYOUT_ANNOTATION: _recorded([[["7g.80gb", 0]]] * 2, NOW - timedelta(minutes=10))}
    held = _read(_node({"7g.80gb": 2}, **recent))
    assert (held.status, held.why) == ("static", "within the hold time of its last change")
    single = _node({"7g.80gb": 2})
    single["metadata"]["labels"]["nvidia.com/mig.strategy"] = "single"
    assert _read(single) is None
    failed = _node({"7g.80gb": 2})
    failed["metadata"]["labels"]["nvidia.com/mig.config.state"] = "failed"
    assert _read(failed).status == "static"
