"""MIG layouts on Kubernetes: which nodes a round may re-carve, and the writes that do it.

NVIDIA's GPU Operator re-partitions a node when its label ``nvidia.com/mig.config`` names a
configuration of the MIG manager's ConfigMap (mig-parted's format): the manager sets
``nvidia.com/mig.config.state`` to ``pending``, pauses the node's GPU add-ons (device plugin,
GPU Feature Discovery, DCGM), applies the configuration (``rebooting`` when MIG mode must
change and a reset fails), and ends in ``success`` or ``failed``; the device plugin then
advertises ``nvidia.com/mig-<profile>`` for the instances that exist (mixed strategy). The
manager drains nothing: the GPUs must be idle. Sources: NVIDIA GPU Operator documentation,
"GPUs with Multi-Instance GPU" (gpu-operator-mig), and mig-parted's ``reconfigure-mig.sh``.

The lifecycle the allocator runs (see ``docs/kubernetes.md``, "MIG layouts planned from
demand"):

1. A node is **plannable** when MIG planning is on, it is MIG-capable under the mixed strategy
   with every GPU MIG-enabled, of a catalog model with MIG profiles, no pod holds or is bound to
   its GPUs, its layout is known (NVML's placements from its inventory annotation unless the
   layout we recorded is newer, then that recorded layout, else the advertised instances spread
   evenly over its GPUs; each only when it agrees with what the node advertises), no change of
   ours is pending, and its last change (or failure) is older than the hold time. The reader
   then offers its GPUs as MIG GPUs with their layout, re-carvable, instead of as the instances
   the device plugin advertises.
2. The round decides (``allocator.solvers.layouts``). Winners on a node the round re-carves are
   not bound: the allocator adds the node's configuration to the ConfigMap, labels the node,
   and records the change as pending (annotation ``gpualloc.io/mig-pending``). Winners on
   plannable nodes that are not re-carved are bound to the instances that exist.
3. While a change is pending the node offers nothing. On ``success``, once the node advertises
   the target's instances, the allocator records the layout (``gpualloc.io/mig-layout``, with
   the time: the hold starts) and the node is offered as it is; the waiting pods win its new
   instances in the next round. On ``failed`` the change is recorded as failed
   (``gpualloc.io/mig-failed``), nothing is bound there, and the node is offered as it is.

Placement inside a GPU is the driver's choice: mig-parted creates instances from per-profile
counts (``CreateGpuInstance``, no placement), retrying orderings of the profiles until one
succeeds. The allocator writes counts, checks that every layout it asks for has a creation order
that succeeds under lowest-free-start placement (``realisable_order``), and accounts instances by
profile, never by start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from allocator.cluster.inventory import node_inventory
from allocator.model import CATALOG, GpuLayout, GpuModel, MigInstance, Placement, Result, Winner
from allocator.model.occupancy import GpuOccupancy, OccupancyError
from allocator.solvers.layouts import realisable_order

__all__ = [
    "CONFIG_LABEL",
    "FAILED_ANNOTATION",
    "LAYOUT_ANNOTATION",
    "PENDING_ANNOTATION",
    "STATE_LABEL",
    "LayoutChange",
    "MigNode",
    "NodePatch",
    "config_document",
    "layout_changes",
    "read_mig_node",
    "settle",
]

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
LAYOUT_ANNOTATION = "gpualloc.io/mig-layout"
PENDING_ANNOTATION = "gpualloc.io/mig-pending"
FAILED_ANNOTATION = "gpualloc.io/mig-failed"
_MIG_PREFIX = "nvidia.com/mig-"


def _resource(profile: str) -> str:
    return _MIG_PREFIX + profile.replace("+", ".")


def _profile(resource: str) -> str | None:
    if not resource.startswith(_MIG_PREFIX):
        return None
    name = resource.removeprefix(_MIG_PREFIX)
    return name[:-3] + "+me" if name.endswith(".me") else name


def _counts(alloc: Mapping[str, Any]) -> Counter[str]:
    """Advertised instances per profile (allocatable ``nvidia.com/mig-<profile>``)."""
    out: Counter[str] = Counter()
    for key, raw in alloc.items():
        profile = _profile(key)
        if profile is None:
            continue
        try:
            n = int(str(raw))
        except ValueError:
            continue
        if n > 0:
            out[profile] = n
    return out


def _totals(gpus: Sequence[Sequence[MigInstance]]) -> Counter[str]:
    return Counter(x.profile for g in gpus for x in g)


def _doc(config: str, gpus: Sequence[Sequence[MigInstance]], at: datetime) -> str:
    return json.dumps(
        {
            "config": config,
            "gpus": [[[x.profile, x.start] for x in g] for g in gpus],
            "at": at.isoformat(),
        },
        separators=(",", ":"),
    )


def _read_doc(text: str | None, path: str) -> tuple[str, tuple[tuple[MigInstance, ...], ...], str]:
    """(config, per-GPU instances, at) of one of our annotations; ValueError naming ``path``."""
    try:
        d = json.loads(text or "")
        config, at = str(d["config"]), str(d["at"])
        gpus = tuple(tuple(MigInstance(str(p), int(s)) for p, s in g) for g in d["gpus"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"metadata.annotations[{path}]: malformed: {e}") from None
    return config, gpus, at


@dataclass(frozen=True, slots=True)
class MigNode:
    """How the round sees a MIG node: ``status`` is ``plannable`` (``gpus``: its layout per
    GPU, ``model`` its catalog model), ``pending`` (a change in flight: it offers nothing) or
    ``static`` (offered as the instances the device plugin advertises); ``why`` says why."""

    name: str
    status: str
    why: str = ""
    model: GpuModel | None = None
    gpus: tuple[tuple[MigInstance, ...], ...] = ()
    config: str = ""


def _uniform_layout(model: GpuModel, counts: Counter[str], n_gpus: int) -> tuple[MigInstance, ...]:
    """Each GPU's layout when ``counts`` are spread evenly over ``n_gpus`` GPUs (how the
    operator's ``all-*`` configurations carve a node); empty if they are not even."""
    if n_gpus <= 0 or any(n % n_gpus for n in counts.values()):
        return ()
    per = [MigInstance(p, 0) for p, n in sorted(counts.items()) for _ in range(n // n_gpus)]
    found = realisable_order(model, per)
    return found[1] if found is not None else ()


def _inventory_layout(
    node: Mapping[str, Any], model: GpuModel, counts: Counter[str], n_gpus: int
) -> tuple[tuple[tuple[MigInstance, ...], ...], datetime | None]:
    """Each GPU's instances as NVML reports them (the node's inventory annotation) and when it
    read them, if that inventory covers every GPU, agrees with what the device plugin advertises
    and obeys the model's placement rules; ``((), None)`` otherwise (a stale or malformed
    inventory is not used)."""
    try:
        inventory = node_inventory(node)
    except ValueError:
        return (), None
    if inventory is None or len(inventory.gpus) != n_gpus:
        return (), None
    layouts = inventory.mig_layouts()
    if len(layouts) != n_gpus:
        return (), None
    gpus = tuple(layouts[i] for i in sorted(layouts))
    if _totals(gpus) != counts:
        return (), None
    for instances in gpus:
        try:
            GpuOccupancy(model, "mig").take_all((x.profile, x.start) for x in instances)
        except OccupancyError:
            return (), None
    return gpus, inventory.read_at


def _known_layout(
    node: Mapping[str, Any], model: GpuModel, counts: Counter[str], n_gpus: int, config: str
) -> tuple[tuple[MigInstance, ...], ...]:
    """The node's layout per GPU, from the best source that agrees with the advertised
    instances: NVML's placements (the inventory) unless the layout we recorded is newer, then
    that recorded layout, then the instances spread evenly; empty when none is known."""
    ann = (node.get("metadata") or {}).get("annotations") or {}
    recorded: tuple[tuple[MigInstance, ...], ...] = ()
    recorded_at: datetime | None = None
    if LAYOUT_ANNOTATION in ann:
        try:
            mine, gpus, at = _read_doc(ann[LAYOUT_ANNOTATION], LAYOUT_ANNOTATION)
            if mine == config and len(gpus) == n_gpus and _totals(gpus) == counts:
                recorded, recorded_at = gpus, datetime.fromisoformat(at)
                if recorded_at.tzinfo is None:
                    recorded_at = recorded_at.replace(tzinfo=UTC)
        except ValueError:
            pass
    read, read_at = _inventory_layout(node, model, counts, n_gpus)
    if read and (recorded_at is None or read_at is None or read_at >= recorded_at):
        return read
    if recorded:
        return recorded
    per = _uniform_layout(model, counts, n_gpus)
    return tuple(per for _ in range(n_gpus)) if per else ()


def read_mig_node(
    node: Mapping[str, Any], *, busy: bool, now: datetime, hold_s: float
) -> MigNode | None:
    """How the round treats ``node`` (a Node object) for MIG planning; None for a node that is
    not MIG-capable under the mixed strategy with every GPU MIG-enabled."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name"))
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    alloc = (node.get("status") or {}).get("allocatable") or {}
    if labels.get("nvidia.com/mig.capable") != "true":
        return None
    if labels.get("nvidia.com/mig.strategy") != "mixed":
        return None
    if PENDING_ANNOTATION in ann:
        return MigNode(name, "pending", "a layout change is being applied")
    model = CATALOG.get(labels.get("nvidia.com/gpu.product", ""))
    try:
        n_gpus = int(labels.get("nvidia.com/gpu.count", "0"))
    except ValueError:
        n_gpus = 0
    if model is None or not model.mig_capable or n_gpus <= 0:
        return MigNode(name, "static", "GPU model or count unknown")
    if str(alloc.get("nvidia.com/gpu", "0")) not in ("0", ""):
        return MigNode(name, "static", "some GPUs have MIG off")
    if labels.get(STATE_LABEL, "success") != "success":
        return MigNode(name, "static", f"{STATE_LABEL} is {labels.get(STATE_LABEL)}")
    if busy:
        return MigNode(name, "static", "a pod holds or is bound to its GPUs")
    last = _last_change(ann)
    if last is not None and (now - last).total_seconds() < hold_s:
        return MigNode(name, "static", "within the hold time of its last change")
    config = labels.get(CONFIG_LABEL, "")
    gpus = _known_layout(node, model, _counts(alloc), n_gpus, config)
    if not gpus:
        return MigNode(name, "static", "its layout is not known")
    return MigNode(name, "plannable", model=model, gpus=gpus, config=config)


def _last_change(ann: Mapping[str, str]) -> datetime | None:
    times = []
    for key in (LAYOUT_ANNOTATION, FAILED_ANNOTATION):
        if key in ann:
            try:
                times.append(datetime.fromisoformat(_read_doc(ann[key], key)[2]))
            except ValueError:
                continue
    return max(times) if times else None


@dataclass(frozen=True, slots=True)
class NodePatch:
    """Labels and annotations to set on ``node`` (a value None removes the key), and an event
    (reason, message, warning) to report, if any."""

    node: str
    labels: Mapping[str, str | None] = field(default_factory=dict)
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    event: tuple[str, str, bool] | None = None


def settle(node: Mapping[str, Any], now: datetime) -> NodePatch | None:
    """The patch that ends a pending change of ours on ``node`` when the MIG manager is done:
    ``success`` with the target's instances advertised records the layout; ``failed`` records
    the failure. None while the change is still in flight (or none is pending)."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name"))
    ann = meta.get("annotations") or {}
    if PENDING_ANNOTATION not in ann:
        return None
    labels = meta.get("labels") or {}
    state = labels.get(STATE_LABEL)
    try:
        config, gpus, _ = _read_doc(ann[PENDING_ANNOTATION], PENDING_ANNOTATION)
    except ValueError as e:
        return NodePatch(
            name, annotations={PENDING_ANNOTATION: None}, event=("MigLayout", str(e), True)
        )
    if labels.get(CONFIG_LABEL) != config:
        return NodePatch(
            name,
            annotations={PENDING_ANNOTATION: None},
            event=("MigLayoutAbandoned", f"{CONFIG_LABEL} no longer names {config}", True),
        )
    alloc = (node.get("status") or {}).get("allocatable") or {}
    if state == "success" and _counts(alloc) == _totals(gpus):
        return NodePatch(
            name,
            annotations={
                PENDING_ANNOTATION: None,
                FAILED_ANNOTATION: None,
                LAYOUT_ANNOTATION: _doc(config, gpus, now),
            },
            event=("MigLayoutApplied", f"MIG layout {config} applied", False),
        )
    if state == "failed":
        return NodePatch(
            name,
            annotations={
                PENDING_ANNOTATION: None,
                LAYOUT_ANNOTATION: None,
                FAILED_ANNOTATION: _doc(config, gpus, now),
            },
            event=(
                "MigLayoutFailed",
                f"the MIG manager reports {STATE_LABEL}=failed for {config}; nothing is bound "
                "there, the node is offered as it is",
                True,
            ),
        )
    return None


@dataclass(frozen=True, slots=True)
class LayoutChange:
    """A node to re-carve: the configuration (its name and mig-parted entries) and the patch
    that asks the MIG manager for it and records it as pending."""

    node: str
    config: str
    entries: tuple[dict[str, Any], ...]
    patch: NodePatch


def config_document(gpus: Sequence[Sequence[MigInstance]]) -> tuple[dict[str, Any], ...]:
    """mig-parted entries for a node's per-GPU layouts: GPUs with equal counts share one entry
    (``devices``: their indices; ``mig-enabled: true``; ``mig-devices``: profile -> count)."""
    groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for i, g in enumerate(gpus):
        key = tuple(sorted(Counter(x.profile for x in g).items()))
        groups.setdefault(key, []).append(i)
    return tuple(
        {"devices": devices, "mig-enabled": True, "mig-devices": dict(key)}
        for key, devices in sorted(groups.items(), key=lambda kv: kv[1][0])
    )


def _config_name(entries: Sequence[Mapping[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:10]
    return f"gpualloc-{digest}"


def layout_changes(
    nodes: Mapping[str, MigNode], layouts: Sequence[GpuLayout], now: datetime
) -> tuple[LayoutChange, ...]:
    """The changes a round's target layouts ask for, one per node with a re-carved GPU."""
    by_node: dict[str, dict[int, GpuLayout]] = {}
    for x in layouts:
        by_node.setdefault(x.node, {})[x.gpu] = x
    out = []
    for name, targets in sorted(by_node.items()):
        mig = nodes.get(name)
        if mig is None or not any(t.recarved for t in targets.values()):
            continue
        gpus = tuple(
            targets[i].instances if i in targets else mig.gpus[i] for i in range(len(mig.gpus))
        )
        assert mig.model is not None
        for i, g in enumerate(gpus):
            if realisable_order(mig.model, g) is None:  # the planner's layouts always are
                raise ValueError(f"layouts: GPU {i} of {name}: no creation order realises it")
        entries = config_document(gpus)
        config = _config_name(entries)
        patch = NodePatch(
            name,
            labels={CONFIG_LABEL: config},
            annotations={PENDING_ANNOTATION: _doc(config, gpus, now)},
            event=("MigLayoutRequested", f"MIG layout {config} requested", False),
        )
        out.append(LayoutChange(name, config, entries, patch))
    return tuple(out)


def instance_slots(mig: MigNode) -> dict[tuple[int, str, int], int]:
    """The device-plugin instance index (as the reader numbers a node's instances: by profile
    name, then GPU, then start) of each (GPU, profile, start) of a plannable node."""
    ordered = sorted(
        ((x.profile, i, x.start) for i, g in enumerate(mig.gpus) for x in g),
    )
    return {(i, p, s): k for k, (p, i, s) in enumerate(ordered)}


def to_instances(result: Result, nodes: Mapping[str, MigNode]) -> tuple[Result, tuple[str, ...]]:
    """``result`` as the writer applies it: winners on a node being re-carved are held back
    (their bid ids returned; they stay pending and win the new instances once they exist), and
    MIG placements on plannable nodes become the instance indices the reader numbers."""
    recarving = {x.node for x in result.layouts if x.recarved}
    winners: list[Winner] = []
    held: list[str] = []
    for w in result.winners:
        if any(pl.node in recarving for pl in w.placements):
            held.append(w.bid_id)
            continue
        placements = []
        for pl in w.placements:
            mig = nodes.get(pl.node)
            if mig is not None and mig.status == "plannable" and pl.mig_profile is not None:
                slot = instance_slots(mig)[(pl.gpus[0], pl.mig_profile, pl.mig_start or 0)]
                placements.append(Placement(pl.node, (slot,)))
            else:
                placements.append(pl)
        winners.append(Winner(w.bid_id, w.alternative, w.value, w.payment, tuple(placements)))
    if not held and winners == list(result.winners):
        return result, ()
    kept = dataclasses.replace(
        result,
        winners=tuple(winners),
        revenue=sum(w.payment for w in winners),
    )
    return kept, tuple(held)
