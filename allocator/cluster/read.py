"""Read a Kubernetes cluster into one round's Problem (pure: API JSON in, frozen data out).

Input is what the API server returns (camelCase JSON): ``Node`` objects, ``Pod`` objects and
``Wallet`` custom resources (``gpualloc.io/v1alpha1``). What becomes what:

- **Nodes**: allocatable CPU and memory, minus what pods that are not GPU work of ours already
  request there; ``nvidia.com/gpu`` allocatable GPUs of the model in ``nvidia.com/gpu.product``
  (suffix ``-SHARED`` dropped; looked up with :func:`allocator.model.find_model`, so GFD's
  ``NVIDIA-A100-SXM4-80GB`` is the catalog's ``A100-SXM4-80GB``; an unknown model is taken whole
  with ``nvidia.com/gpu.memory``),
  shared (fractional) when the node's ``nvidia.com/gpu.sharing-strategy`` is ``time-slicing`` or
  ``mps``; rack and zone from the configured labels.
- **MIG**: the layout is static (NVIDIA's MIG manager carves it from ``nvidia.com/mig.config``)
  and the allocator only hands out instances that exist, so each instance is a whole-mode
  pseudo-GPU of a synthetic model (see :func:`mig_model_name`) whose memory is the profile's
  (the GFD label ``nvidia.com/mig-<profile>.memory`` in MiB when present, else the catalog's,
  else the ``<M>gb`` of the name for a product the catalog does not know). Under the mixed
  strategy the node's allocatable ``nvidia.com/mig-<profile>: c`` gives c pseudo-GPUs of
  ``<product>-MIG-<profile>`` (``nvidia.com/gpu`` keeps counting the GPUs with MIG off); under
  the single strategy (product label ``<product>-MIG-<profile>``) its ``nvidia.com/gpu: c`` are c
  pseudo-GPUs of ``<product>-MIG-<profile>-single``. Indices on a node: the ``nvidia.com/gpu``
  ones first (0, 1, ...), then the mixed strategy's instances, by profile name, then instance.
  A profile the catalog does not know for the product, or a count that is not a whole number
  >= 0, leaves the node out naming the field.
- **NVLink**: from the node's ``gpualloc.io/inventory`` annotation (NVML, written by
  ``gpu-allocator inventory --publish``; :mod:`allocator.cluster.inventory`): the k-th
  ``nvidia.com/gpu`` GPU is the k-th GPU with MIG off there, by NVML index, and gets the NVLink
  domain (``nvlink<n>``) NVML's links put it in. A node without the annotation keeps its GPUs in
  one domain; a malformed annotation leaves the node out naming the field; a count that
  disagrees with the allocatable ``nvidia.com/gpu`` (a GPU the device plugin found unhealthy)
  keeps the node in one domain and reports it. MIG instances are not affected.
- **Pending pods** of ``spec.schedulerName`` == the allocator's name, not yet bound: bids. A pod
  requests ``nvidia.com/gpu: n`` (n whole GPUs on one node), ``nvidia.com/mig-<profile>: n`` (n
  instances of one profile on one node: n whole pseudo-GPUs restricted to the models
  ``*-MIG-<profile>`` of the mixed strategy) or the share resource with
  ``gpualloc.io/gpu-milli``. Once any node offers mixed-strategy instances, ``nvidia.com/gpu``
  pods are restricted to the other models (real GPUs, single-strategy instances), since the
  kubelet admits each pod only against the resource it names. ``gpualloc.io/bid`` is the value
  and ``gpualloc.io/wallet`` names a Wallet of the pod's namespace. Pods with the same
  ``gpualloc.io/gang`` label in a namespace are one bid whose replicas are the pods (same
  requests), worth the sum, with ``gpualloc.io/locality``.
- **Running pods** holding GPUs or MIG instances: incumbents, at the GPUs of their
  ``gpualloc.io/gpus`` annotation (written at bind time; it must name GPUs of the resource the
  pod holds) or, for pods placed by someone else, the node's lowest free indices of that
  resource. Pods of other schedulers are never preemptible, nor are pods being deleted (they hold
  their room until the kubelet is done with them); ours are unless
  ``gpualloc.io/preemptible`` is ``"false"``; ``gpualloc.io/preemption-cost`` adds to the welfare
  an eviction destroys.
- **Wallets**: ``<namespace>/<name>`` with balance ``spec.balance`` plus
  ``spec.incomePerPeriod`` for every ``spec.period`` started since the Wallet's creation, minus
  ``status.spent``; bids are ordered by their Wallet's ``spec.priority`` (higher first), so that
  it breaks ties between equal scores.

A malformed object never stops the round: it is left out and listed in ``Snapshot.skipped`` with
the field path and the reason, which the round reports as a Warning Event on the object.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from kubernetes.utils.quantity import parse_quantity as _untyped_quantity

from allocator.cluster.config import AGENT_LABEL, ANNOTATION_PREFIX, ClusterConfig
from allocator.cluster.inventory import INVENTORY_ANNOTATION, NodeInventory, node_inventory
from allocator.cluster.mig import MigNode, read_mig_node
from allocator.model import (
    CATALOG,
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
from allocator.model.catalog import GpuModel, find_model, whole_gpu_model
from allocator.model.market import WalletView

__all__ = [
    "PodOrigin",
    "Skipped",
    "Snapshot",
    "go_duration",
    "mig_model_name",
    "mig_profile",
    "mig_resource",
    "parse_quantity",
    "snapshot",
    "wallet_view",
]

GPU_RESOURCE = "nvidia.com/gpu"
# What vcluster's syncer writes on a host pod: its name and namespace in the agent's cluster.
VCLUSTER_OBJECT_NAME = "vcluster.loft.sh/object-name"
VCLUSTER_OBJECT_NAMESPACE = "vcluster.loft.sh/object-namespace"
PRODUCT_LABEL = "nvidia.com/gpu.product"
LOCALITIES = ("gpu", "nvlink", "node", "rack", "zone", "any")
_MIG_PREFIX = "nvidia.com/mig-"
# A GPU-instance profile as NVIDIA names it; resource names and label values cannot hold a '+',
# so the device plugin and GFD write the media-extension suffix '+me' as '.me'.
_PROFILE = re.compile(r"^(\d+g\.(\d+)gb)(?:[.+](me))?$")
_MIG_PRODUCT = re.compile(r"^(.+?)-MIG-(.+)$")
# What the API server accepts as a quantity (a decimal number, optional exponent, one suffix);
# kubernetes.utils.parse_quantity alone is laxer (it takes "1K", " 5", "NaN", "1_0").
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_k8s_quantity: Callable[[str], Decimal] = _untyped_quantity  # the client declares no types
_SUFFIXES = frozenset(
    ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "", "k", "M", "G", "T", "P", "E")
)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An object left out of the round: its kind, ``namespace/name`` (a node: its name), the
    field and why, and its uid (which the Event about it names). ``kept``: a running pod with a
    bad annotation, reported but still in the round, holding its GPUs; a node whose inventory
    annotation does not match its GPUs, in the round without NVLink domains."""

    kind: str
    name: str
    field: str
    reason: str
    uid: str | None = None
    kept: bool = False


@dataclass(frozen=True)
class Snapshot:
    """One round's Problem and the bookkeeping to apply its Result.

    ``pods_of_bid`` maps a bid id to its pods (``namespace/name``, in replica order);
    ``pods_of_incumbent`` the same for incumbents; ``pod_uids`` the uid of every pod read (the
    Events about a pod name it). Agents: ``origins`` maps each pod of an agent's host namespace
    to its agent and its name in the agent's cluster, ``agents`` a host namespace to its agent,
    ``agent_wallets`` an agent to its Wallet's figures this round.
    """

    problem: Problem
    pods_of_bid: Mapping[str, tuple[str, ...]]
    pods_of_incumbent: Mapping[str, tuple[str, ...]]
    skipped: tuple[Skipped, ...] = field(default=())
    pod_uids: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, PodOrigin] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)
    agent_wallets: Mapping[str, WalletView] = field(default_factory=dict)
    #: MIG nodes under layout planning (pending or plannable), by name.
    mig_nodes: Mapping[str, MigNode] = field(default_factory=dict)
    #: Per bid id: seconds since its oldest pod was created, at the time of the read.
    bid_waits: Mapping[str, float] = field(default_factory=dict)

    def display_name(self, pod: str) -> str:
        """How events and round records name ``pod``: an agent's pod by its agent and its name
        in the agent's own cluster (``agent alice: team1/trainer-0``), any other by
        ``namespace/name``."""
        origin = self.origins.get(pod)
        return pod if origin is None else f"agent {origin.agent}: {origin.name}"


@dataclass(frozen=True, slots=True)
class PodOrigin:
    """Where a pod synced from an agent's own control plane came from: the agent, and the pod's
    ``namespace/name`` in the agent's cluster (vcluster's ``vcluster.loft.sh/object-*``
    annotations; the host pod's own name when they are missing)."""

    agent: str
    name: str


def parse_quantity(text: Any) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Gi``, ``1e3``) as a Decimal: the
    syntax is checked here, the value comes from ``kubernetes.utils.parse_quantity`` (rounded to
    the decimal context's 28 digits, as a value with a suffix is)."""
    written = str(text).strip()
    m = _QUANTITY.match(written)
    try:
        if not m:
            raise ValueError(written)
        _k8s_quantity(m.group(1))  # the number alone: it ends in a digit or a dot, no suffix
    except ValueError:
        raise ValueError(f"not a quantity: {text!r}") from None
    if m.group(2) not in _SUFFIXES:
        raise ValueError(f"unknown quantity suffix {m.group(2)!r} in {text!r}")
    return +_k8s_quantity(written)


def _cpu_milli(q: Any) -> int:
    return math.ceil(parse_quantity(q) * 1000)


def _memory_mib(q: Any) -> int:
    return math.ceil(parse_quantity(q) / 2**20)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _full_name(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _origin(pod: Mapping[str, Any], agent: str) -> PodOrigin:
    ann = _meta(pod).get("annotations") or {}
    ns, name = ann.get(VCLUSTER_OBJECT_NAMESPACE), ann.get(VCLUSTER_OBJECT_NAME)
    if ns and name:
        return PodOrigin(agent, f"{ns}/{name}")
    return PodOrigin(agent, _full_name(pod))


def _gang_key(pod: Mapping[str, Any], gang: str) -> str:
    """A gang's bid id: the host namespace, and for a pod synced by vcluster also the namespace
    it has in the agent's cluster (pods of several virtual namespaces share one host namespace)."""
    meta = _meta(pod)
    virtual_ns = (meta.get("annotations") or {}).get(VCLUSTER_OBJECT_NAMESPACE)
    if virtual_ns:
        return f"{meta.get('namespace')}/gang/{virtual_ns}/{gang}"
    return f"{meta.get('namespace')}/gang/{gang}"


def _pod_wallet(pod: Mapping[str, Any], agents: Mapping[str, str]) -> str | None:
    """The Wallet (``namespace/name``) a pod pays from, or None when it names none. In an
    agent's namespace it is the agent's own Wallet, named or not; naming another is refused."""
    meta = _meta(pod)
    ns = str(meta.get("namespace"))
    named = (meta.get("annotations") or {}).get(ANNOTATION_PREFIX + "wallet")
    agent = agents.get(ns)
    if agent is None:
        return f"{ns}/{named}" if named else None
    if named and named != agent:
        raise ValueError(
            f"metadata.annotations[{ANNOTATION_PREFIX}wallet]: names Wallet {named!r}, but "
            f"the pods of agent {agent} pay from its own Wallet {agent!r}"
        )
    return f"{ns}/{agent}"


def _requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """Sum of the containers' requests (limits stand in for missing requests of extended
    resources, as Kubernetes defaults them)."""
    total: dict[str, Decimal] = defaultdict(Decimal)
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})
        for k, v in req.items():
            total[k] += parse_quantity(v)
    return dict(total)


def mig_profile(resource: str) -> str | None:
    """The MIG profile of a mixed-strategy resource (``nvidia.com/mig-1g.10gb`` -> ``1g.10gb``,
    ``nvidia.com/mig-1g.10gb.me`` -> ``1g.10gb+me``), or None for any other resource."""
    if not resource.startswith(_MIG_PREFIX):
        return None
    return _profile_name(resource.removeprefix(_MIG_PREFIX))


def mig_resource(profile: str) -> str:
    """The extended resource the device plugin publishes ``profile`` under (mixed strategy)."""
    return _MIG_PREFIX + profile.replace("+", ".")


def mig_model_name(product: str, profile: str, *, single: bool = False) -> str:
    """The synthetic model of one MIG instance of ``profile`` on a GPU of ``product`` (the
    catalog's name when it knows the product): ``A100-SXM4-80GB-MIG-1g.10gb`` for instances a
    pod asks for as ``nvidia.com/mig-1g.10gb`` (mixed strategy), with ``-single`` appended for
    those it asks for as ``nvidia.com/gpu`` (single strategy): the two never stand in for each
    other, since the kubelet admits a pod only against the resource it names."""
    return f"{product}-MIG-{profile}" + ("-single" if single else "")


def _profile_name(text: str) -> str | None:
    m = _PROFILE.match(text)
    if m is None:
        return None
    return m.group(1) + ("+me" if m.group(3) else "")


def _named_memory_gb(profile: str) -> float:
    """The ``<M>`` of a profile named ``<G>g.<M>gb`` (validated by ``_profile_name``)."""
    m = _PROFILE.match(profile)
    assert m is not None, profile
    return float(m.group(2))


#: Compute slices of a full GPU assumed for a product the catalog does not know (7 on every
#: MIG-capable catalog model but the A30).
_DEFAULT_COMPUTE_UNITS = 7


def _instance_equivalent(product: GpuModel | None, profile: str) -> float:
    """GPU-equivalents of one instance of ``profile``: its compute slices over the product's
    (catalog), else the ``<G>`` of its name over 7."""
    known = product.profile(profile) if product is not None else None
    if product is not None and known is not None:
        return product.gpu_equivalent(known)
    assert _PROFILE.match(profile) is not None, profile
    return min(1.0, int(profile.split("g", 1)[0]) / _DEFAULT_COMPUTE_UNITS)


def _whole_count(raw: Any, path: str) -> int:
    """A device count (a quantity that is a whole number >= 0); ValueError naming ``path``."""
    try:
        value = parse_quantity(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if value < 0 or value != value.to_integral_value():
        raise ValueError(f"{path}: must be a whole number >= 0, got {raw!s}")
    return int(value)


def _mib_label(labels: Mapping[str, str], key: str) -> float | None:
    """A memory label in MiB (GFD's ``nvidia.com/gpu.memory`` and ``...<profile>.memory``) as
    GB, or None when absent; ValueError naming the label when it is not a positive number."""
    raw = labels.get(key)
    if raw is None:
        return None
    try:
        mib = float(raw)
    except ValueError:
        mib = math.nan
    if not math.isfinite(mib) or mib <= 0:
        raise ValueError(f"metadata.labels[{key}]: not a positive number of MiB: {raw!r}")
    return mib / 1024.0


@dataclass(frozen=True, slots=True)
class _PodUnit:
    """What a pod asks for: its unit, CPU and memory, and the extended resource the GPUs come
    from (``profile`` set for ``nvidia.com/mig-<profile>``)."""

    unit: Unit
    cpu_milli: int
    memory_mib: int
    resource: str = GPU_RESOURCE
    profile: str | None = None


def _pod_unit(pod: Mapping[str, Any], cfg: ClusterConfig) -> _PodUnit | None:
    """The GPU unit a pod asks for (None: no GPU). Raises ValueError naming the field."""
    req = _requests(pod)
    ann = _meta(pod).get("annotations") or {}
    cpu = _cpu_milli(req.get("cpu", 0))
    mem = _memory_mib(req.get("memory", 0))
    path = "spec.containers[].resources"
    counts = {
        key: _whole_count(value, f"{path}.{key}")
        for key, value in req.items()
        if key == GPU_RESOURCE or mig_profile(key) is not None
    }
    if cfg.share_resource in req:
        counts[cfg.share_resource] = int(req[cfg.share_resource] > 0)
    kinds = sorted(key for key, n in counts.items() if n > 0)
    if not kinds:
        unknown = [k for k in req if k.startswith(_MIG_PREFIX) and mig_profile(k) is None]
        if unknown:
            raise ValueError(f"{path}.{unknown[0]}: not a MIG profile NVIDIA names")
        return None
    if len(kinds) > 1:
        raise ValueError(f"{path}: asks for more than one kind of GPU: {', '.join(kinds)}")
    resource = kinds[0]
    if resource == cfg.share_resource:
        key = ANNOTATION_PREFIX + "gpu-milli"
        raw = ann.get(key)
        try:
            milli = int(str(raw))
        except ValueError:
            raise ValueError(f"metadata.annotations[{key}]: not an integer: {raw!r}") from None
        if not 1 <= milli <= 999:
            raise ValueError(f"metadata.annotations[{key}]: must be in 1..999, got {milli}")
        return _PodUnit(Unit("share", milli=milli), cpu, mem, resource)
    unit = Unit("whole", gpus=counts[resource])
    return _PodUnit(unit, cpu, mem, resource, mig_profile(resource))


@dataclass
class _NodeOffer:
    """A node's GPUs, the indices each resource draws from (``pools``: MIG profile, or None for
    ``nvidia.com/gpu``), the models it needs that the catalog lacks (name -> memory GB and
    GPU-equivalents per device), and whether ``nvidia.com/gpu`` counts MIG instances (the
    single strategy)."""

    gpus: list[Gpu] = field(default_factory=list)
    pools: dict[str | None, list[int]] = field(default_factory=dict)
    models: dict[str, tuple[float, float]] = field(default_factory=dict)
    single: bool = False

    def add(self, count: int, model: str, mode: str, profile: str | None) -> None:
        for _ in range(count):
            self.pools.setdefault(profile, []).append(len(self.gpus))
            self.gpus.append(Gpu(index=len(self.gpus), model=model, mode=mode))


def _node_gpus(labels: Mapping[str, str], alloc: Mapping[str, Any]) -> _NodeOffer:
    """What a node offers (see the module docstring); ValueError naming the field."""
    count = _whole_count(alloc.get(GPU_RESOURCE, 0), f"status.allocatable[{GPU_RESOURCE}]")
    instances: dict[str, int] = {}
    for key in alloc:
        profile = mig_profile(key)
        if profile is not None:
            instances[profile] = _whole_count(alloc[key], f"status.allocatable[{key}]")
    offer = _NodeOffer()
    if count == 0 and not any(instances.values()):
        return offer
    product_field = f"metadata.labels[{PRODUCT_LABEL}]"
    product = labels.get(PRODUCT_LABEL)
    if not product:
        raise ValueError(f"{product_field}: missing on a GPU node")
    product = product.removesuffix("-SHARED")
    single = _MIG_PRODUCT.match(product)
    offer.single = single is not None
    parent = single.group(1) if single else product
    known = find_model(parent)
    sharing = labels.get("nvidia.com/gpu.sharing-strategy", "none")
    mode = "shared" if sharing in ("time-slicing", "mps") else "whole"

    def instance_model(text: str, path: str, *, single: bool) -> str:
        profile = _profile_name(text)
        if profile is None:
            raise ValueError(f"{path}: {text!r} is not a MIG profile name")
        in_catalog = known.profile(profile) if known is not None else None
        if known is not None and in_catalog is None:
            raise ValueError(f"{path}: {known.name} has no MIG profile {profile!r}")
        memory_gb = _mib_label(labels, mig_resource(profile) + ".memory")
        if memory_gb is None:  # for a product the catalog does not know, the name says it
            memory_gb = in_catalog.memory_gb if in_catalog else _named_memory_gb(profile)
        model = mig_model_name(known.name if known else parent, profile, single=single)
        offer.models[model] = (memory_gb, _instance_equivalent(known, profile))
        return model

    if single:
        model = instance_model(single.group(2), product_field, single=True)
    else:
        model = known.name if known is not None else product
        if known is None:
            offer.models[model] = (_mib_label(labels, "nvidia.com/gpu.memory") or 16.0, 1.0)
    offer.add(count, model, mode, None)
    for profile, n in sorted(instances.items()):
        if n > 0:
            path = f"status.allocatable[{mig_resource(profile)}]"
            offer.add(n, instance_model(profile, path, single=False), "whole", profile)
    return offer


def _with_nvlink(offer: _NodeOffer, inventory: NodeInventory | None) -> str | None:
    """Set the NVLink domains of the inventory on the node's ``nvidia.com/gpu`` GPUs (the k-th
    is the inventory's k-th GPU with MIG off); why not, when the counts disagree."""
    pool = offer.pools.get(None, [])
    if inventory is None or offer.single or not pool:
        return None
    whole = inventory.whole_gpus()
    if len(whole) != len(pool):
        return (
            f"metadata.annotations[{INVENTORY_ANNOTATION}].gpus: {len(whole)} GPU(s) with MIG "
            f"off, but status.allocatable[{GPU_RESOURCE}] is {len(pool)}: NVLink domains unknown"
        )
    domain_of = inventory.nvlink_domain_of()
    for k, g in zip(pool, whole, strict=True):
        offer.gpus[k] = dataclasses.replace(offer.gpus[k], nvlink=f"nvlink{domain_of[g.index]}")
    return None


def _add_model(
    extra: dict[str, GpuModel], name: str, memory_gb: float, equivalent: float = 1.0
) -> None:
    """Register a model the catalog lacks (``equivalent``: GPU-equivalents per device, below 1
    for a MIG instance); nodes that disagree on its memory get the least."""
    if name in extra:
        memory_gb = min(memory_gb, extra[name].memory_gb)
    extra[name] = whole_gpu_model(name, memory_gb, whole_equivalent=equivalent)


def _held_gpus(
    pu: _PodUnit,
    ann: Mapping[str, str],
    node: str,
    pools: Mapping[str | None, list[int]],
    free: dict[str | None, list[int]],
) -> list[int]:
    """The GPU indices a running pod holds: those its ``gpualloc.io/gpus`` annotation names, or
    the lowest free ones of its resource; whole GPUs are taken out of ``free``. ValueError
    naming the field when they are not GPUs of its resource on ``node`` or already taken."""
    pool = pools.get(pu.profile, [])
    want = pu.unit.gpus if pu.unit.kind == "whole" else 1
    key = ANNOTATION_PREFIX + "gpus"
    raw = ann.get(key)
    if raw:
        try:
            idx = [int(x) for x in str(raw).split(",")]
        except ValueError:
            idx = []
        if len(idx) != want or any(i not in pool for i in idx):
            raise ValueError(
                f"metadata.annotations[{key}]: {raw!r} does not name {want} of the "
                f"{pu.resource} GPUs of {node} ({pool})"
            )
    else:
        idx = free.get(pu.profile, [])[:want]
        if len(idx) != want:
            raise ValueError(
                f"spec.nodeName: {node} has {len(idx)} free {pu.resource} GPU(s) of the "
                f"{want} this pod holds"
            )
    if pu.unit.kind == "whole":
        for i in idx:
            if i not in free[pu.profile]:
                raise ValueError(f"spec.nodeName: GPU {i} of {node} is taken twice")
            free[pu.profile].remove(i)
    return idx


def _allowed_models(
    pu: _PodUnit, offered: Mapping[str | None, set[str]], extra: dict[str, GpuModel]
) -> tuple[str, ...]:
    """The models a pending pod may get (empty: any). A MIG pod gets the mixed-strategy instance
    models of its profile; once there are any such, an ``nvidia.com/gpu`` pod gets every other
    model offered. Where nothing is offered, the catalog's models (and instance models of the
    products that have the profile) stand in, so the bid loses as not fitting. ValueError naming
    the field for a profile no node offers and no catalog model has."""
    if pu.unit.kind == "share":
        return ()  # shares only go on shared GPUs, and no MIG instance is one
    catalog = sorted({m.name: m for m in CATALOG.values()}.items())
    if pu.profile is None:
        if not any(offered.get(k) for k in offered if k is not None):
            return ()
        return tuple(sorted(offered.get(None, ()))) or tuple(name for name, _ in catalog)
    if offered.get(pu.profile):
        return tuple(sorted(offered[pu.profile]))
    stand_in = {
        mig_model_name(name, pu.profile): (p.memory_gb, m.gpu_equivalent(p))
        for name, m in catalog
        if (p := m.profile(pu.profile)) is not None
    }
    if not stand_in:
        raise ValueError(
            f"spec.containers[].resources.{pu.resource}: no node offers it and no GPU model of "
            f"the catalog has MIG profile {pu.profile!r}"
        )
    for name, (memory_gb, equivalent) in stand_in.items():
        _add_model(extra, name, memory_gb, equivalent)
    return tuple(sorted(stand_in))


def _number(ann: Mapping[str, str], key: str, default: float | None = None) -> float:
    full = ANNOTATION_PREFIX + key
    if full not in ann:
        if default is None:
            raise ValueError(f"metadata.annotations[{full}]: missing")
        return default
    try:
        value = float(ann[full])
    except ValueError:
        raise ValueError(f"metadata.annotations[{full}]: not a number: {ann[full]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"metadata.annotations[{full}]: must be finite and >= 0")
    return value


def _amount(raw: Any, path: str) -> float:
    """A wallet amount (a JSON number, finite, >= 0); ValueError naming ``path``."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{path}: not a number: {raw!r}")
    if not math.isfinite(raw) or raw < 0:
        raise ValueError(f"{path}: must be finite and >= 0, got {raw!r}")
    return float(raw)


def _is_running(pod: Mapping[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed")


_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: Any, path: str) -> float:
    """Seconds of a Go duration (``24h``, ``1h30m``, ``1.5h``, ``90s``); ValueError naming
    ``path`` unless it is one, and positive."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{path}: not a duration: {text!r}")
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or total <= 0:
        raise ValueError(f"{path}: not a positive Go duration (e.g. 24h, 1h30m): {text!r}")
    return total


def _timestamp(text: Any, path: str) -> datetime:
    """An RFC 3339 time as the API server writes it (``2026-11-30T06:08:38Z``)."""
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{path}: not a time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def wallet_view(w: Mapping[str, Any], now: datetime) -> WalletView:
    """A Wallet's figures this round: ``balance`` is ``spec.balance`` plus
    ``spec.incomePerPeriod`` for every period (``spec.period``, default 24h) that has started
    since the Wallet was created; ``available`` = balance - ``status.spent`` (never below 0);
    ``priority`` breaks ties. ValueError naming the field on a malformed Wallet."""
    spec = w.get("spec") or {}
    if "balance" not in spec:
        raise ValueError("spec.balance: missing")
    balance = _amount(spec["balance"], "spec.balance")
    spent = _amount((w.get("status") or {}).get("spent") or 0, "status.spent")
    income = _amount(spec.get("incomePerPeriod") or 0, "spec.incomePerPeriod")
    period_text = spec.get("period", "24h")
    if income > 0:
        period = go_duration(period_text, "spec.period")
        created = _meta(w).get("creationTimestamp")
        if created:
            age = (now - _timestamp(created, "metadata.creationTimestamp")).total_seconds()
            balance += income * max(0, math.floor(age / period))
    priority = spec.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"spec.priority: not an integer: {priority!r}")
    return WalletView(
        name=str(_meta(w).get("name")),
        balance=balance,
        income_per_period=income,
        period=str(period_text) if income > 0 else None,
        priority=priority,
        spent=spent,
        available=max(balance - spent, 0.0),
    )


def _wallet_balance(w: Mapping[str, Any], now: datetime) -> tuple[float, int]:
    """What a Wallet may spend this round, and its priority (see :func:`wallet_view`)."""
    view = wallet_view(w, now)
    return view.available, view.priority


def snapshot(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    wallets: Sequence[Mapping[str, Any]],
    config: ClusterConfig | None = None,
    round_id: str = "round",
    now: datetime | None = None,
) -> Snapshot:
    """Build the round's Problem from API objects (see the module docstring); ``now`` (default:
    the current UTC time) decides how many funding periods of each Wallet have started."""
    reader = _RoundReader(config or ClusterConfig(), now or datetime.now(UTC))
    reader.read_wallets(wallets)
    reader.read_agents(wallets, pods)
    reader.read_running(pods)
    reader.read_nodes(nodes)
    reader.read_incumbents()
    reader.read_bids(pods)
    return reader.snapshot(pods, round_id)


class _RoundReader:
    """One round's reading of the API objects, one kind after the other (each method reads what
    the ones before it found); every object it leaves out goes to ``skipped``."""

    def __init__(self, cfg: ClusterConfig, now: datetime) -> None:
        self.cfg = cfg
        self.now = now
        self.skipped: list[Skipped] = []
        # Wallets and agents.
        self.wallets: list[Wallet] = []
        self.priority: dict[str, int] = {}
        self.wallet_names: set[str] = set()
        self.agents: dict[str, str] = {}  # host namespace -> agent
        self.agent_wallets: dict[str, WalletView] = {}
        self.origins: dict[str, PodOrigin] = {}
        # GPU work already running, per node (ours and others'), and what other pods take.
        self.running: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        self.other_cpu: dict[str, int] = defaultdict(int)
        self.other_mem: dict[str, int] = defaultdict(int)
        # Nodes.
        self.nodes: list[Node] = []
        self.extra: dict[str, GpuModel] = {}
        self.pools: dict[str, dict[str | None, list[int]]] = {}  # node -> profile -> indices
        self.offered: dict[str | None, set[str]] = defaultdict(set)  # profile -> models
        self.free: dict[str, dict[str | None, list[int]]] = {}
        self.mig_nodes: dict[str, MigNode] = {}  # MIG nodes under planning
        self.planned_profiles: dict[str, set[str]] = {}  # profile -> models of plannable nodes
        # What becomes of the pods.
        self.incumbents: list[Incumbent] = []
        self.pods_of_incumbent: dict[str, tuple[str, ...]] = {}
        self.bids: list[Bid] = []
        self.pods_of_bid: dict[str, tuple[str, ...]] = {}

    def skip(self, kind: str, obj: Mapping[str, Any], message: str, kept: bool = False) -> None:
        path, _, reason = message.partition(": ")
        uid = _meta(obj).get("uid")
        self.skipped.append(Skipped(kind, _full_name(obj), path, reason or message, uid, kept))

    def read_wallets(self, wallets: Sequence[Mapping[str, Any]]) -> None:
        """The Wallets that can pay. The CRD's schema rejects what is wrong here, but an object
        stored before the schema was (or under a laxer one) is served as it is."""
        for w in wallets:
            try:
                available, self.priority[_full_name(w)] = _wallet_balance(w, self.now)
                self.wallets.append(Wallet(_full_name(w), available))
            except (ValueError, ProblemError) as e:
                self.skip("Wallet", w, str(e))
        self.wallet_names = {w.name for w in self.wallets}

    def read_agents(
        self, wallets: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
    ) -> None:
        """An agent's Wallet (labelled with its name, in its host namespace) marks that
        namespace as the agent's: its pods pay from that Wallet. Only the host writes Wallets."""
        for w in wallets:
            agent = (_meta(w).get("labels") or {}).get(AGENT_LABEL)
            if agent and _full_name(w) in self.wallet_names and agent == _meta(w).get("name"):
                self.agents[str(_meta(w).get("namespace"))] = agent
                self.agent_wallets[agent] = wallet_view(w, self.now)
        for p in pods:
            agent = self.agents.get(str(_meta(p).get("namespace")))
            if agent is not None:
                self.origins[_full_name(p)] = _origin(p, agent)

    def read_running(self, pods: Sequence[Mapping[str, Any]]) -> None:
        """Running pods: those holding GPUs per node; the others' CPU and memory requests."""
        for p in pods:
            if not _is_running(p):
                continue
            node = p["spec"]["nodeName"]
            try:
                unit = _pod_unit(p, self.cfg)
            except ValueError as e:
                self.skip("Pod", p, str(e))
                unit = None
            if unit is None:
                req = _requests(p)
                self.other_cpu[node] += _cpu_milli(req.get("cpu", 0))
                self.other_mem[node] += _memory_mib(req.get("memory", 0))
            else:
                self.running[node].append(p)

    def read_nodes(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        """The nodes, less what running pods that are not GPU work take, and their GPUs (with
        the NVLink domains of their inventory annotation)."""
        for n in nodes:
            meta = _meta(n)
            name = str(meta.get("name"))
            labels = meta.get("labels") or {}
            alloc = (n.get("status") or {}).get("allocatable") or {}
            try:
                cpu = _cpu_milli(alloc.get("cpu", 0)) - self.other_cpu[name]
                mem = _memory_mib(alloc.get("memory", 0)) - self.other_mem[name]
                offer = _node_gpus(labels, alloc)
                if self.cfg.mig_planning:
                    offer = self._planned(n, offer)
                unmatched = _with_nvlink(offer, node_inventory(n))
                self.nodes.append(
                    Node(
                        name=name,
                        cpu_milli=max(cpu, 0),
                        memory_mib=max(mem, 0),
                        gpus=tuple(offer.gpus),
                        rack=labels.get(self.cfg.rack_label),
                        zone=labels.get(self.cfg.zone_label),
                    )
                )
            except (ValueError, ProblemError) as e:
                self.skip("Node", n, str(e))
                continue
            if unmatched:
                self.skip("Node", n, unmatched, kept=True)
            for model, (memory_gb, equivalent) in offer.models.items():
                _add_model(self.extra, model, memory_gb, equivalent)
            self.pools[name] = offer.pools
            for profile, indices in offer.pools.items():
                self.offered[profile].update(offer.gpus[i].model for i in indices)
        self.free = {
            node: {k: list(v) for k, v in pool.items()} for node, pool in self.pools.items()
        }

    def _planned(self, node: Mapping[str, Any], offer: _NodeOffer) -> _NodeOffer:
        """A MIG node under planning: a change pending offers nothing; a plannable node offers
        its GPUs as MIG GPUs with their layout, re-carvable (see allocator.cluster.mig)."""
        name = str(_meta(node).get("name"))
        mig = read_mig_node(
            node, busy=bool(self.running.get(name)), now=self.now, hold_s=self.cfg.mig_hold_s
        )
        if mig is None or mig.status == "static":
            return offer
        self.mig_nodes[name] = mig
        if mig.status == "pending" or mig.model is None:
            return _NodeOffer()
        planned = _NodeOffer()
        for i, layout in enumerate(mig.gpus):
            planned.gpus.append(Gpu(index=i, model=mig.model.name, mode="mig", layout=layout))
        for p in mig.model.profiles:
            self.planned_profiles.setdefault(p.name, set()).add(mig.model.name)
        return planned

    def read_incumbents(self) -> None:
        """Running GPU pods become incumbents at their GPUs (on the nodes read)."""
        for node in sorted(self.running):
            if node not in self.pools:
                continue
            for p in self.running[node]:
                try:
                    incumbent = self._incumbent(node, p)
                except (ValueError, AssertionError, ProblemError) as e:
                    self.skip("Pod", p, str(e))
                    continue
                self.incumbents.append(incumbent)
                self.pods_of_incumbent[incumbent.id] = (incumbent.id,)

    def _held(self, pu: _PodUnit, node: str, pod: Mapping[str, Any], bad: list[str]) -> list[int]:
        """The GPUs a running pod holds. It holds them whatever its annotations say: with a
        malformed ``gpualloc.io/gpus`` it is reported (in ``bad``) and kept at the lowest free
        GPUs of its resource (left out, its GPUs would look free)."""
        ann = _meta(pod).get("annotations") or {}
        try:
            return _held_gpus(pu, ann, node, self.pools[node], self.free[node])
        except ValueError as e:
            if not ann.get(ANNOTATION_PREFIX + "gpus"):
                raise
            bad.append(str(e))
            plain = {k: v for k, v in ann.items() if k != ANNOTATION_PREFIX + "gpus"}
            return _held_gpus(pu, plain, node, self.pools[node], self.free[node])

    def _incumbent(self, node: str, p: Mapping[str, Any]) -> Incumbent:
        """A running GPU pod as an incumbent; one with malformed annotations is reported and
        kept with no value and not preemptible. ValueError naming the field when it cannot be
        placed at all."""
        ann = _meta(p).get("annotations") or {}
        pu = _pod_unit(p, self.cfg)
        assert pu is not None
        ours = (p.get("spec") or {}).get("schedulerName") == self.cfg.scheduler_name
        bad: list[str] = []
        idx = self._held(pu, node, p, bad)
        try:
            value = _number(ann, "bid", 0.0)
            cost = _number(ann, "preemption-cost", 0.0)
        except ValueError as e:
            bad.append(str(e))
            value = cost = 0.0
        if bad:
            self.skip("Pod", p, "; ".join(bad), kept=True)
        if pu.unit.kind == "whole":
            placement = Placement(node, tuple(idx))
        else:
            placement = Placement(node, (idx[0],), milli=pu.unit.milli)
        # A pod being deleted (an eviction the kubelet has not finished) holds its room until
        # it is gone and cannot be evicted again.
        terminating = bool(_meta(p).get("deletionTimestamp"))
        preemptible = (
            ours
            and not terminating
            and not bad
            and ann.get(ANNOTATION_PREFIX + "preemptible", "true") != "false"
        )
        try:
            wallet = _pod_wallet(p, self.agents)
        except ValueError:
            wallet = None  # it runs; only its value is at stake, not its pay
        return Incumbent(
            id=_full_name(p),
            bidder=_bidder(p, self.agents),
            value=value,
            placements=(placement,),
            cpu_milli=pu.cpu_milli,
            memory_mib=pu.memory_mib,
            preemptible=preemptible,
            preemption_cost=cost,
            wallet=wallet if wallet in self.wallet_names else None,
        )

    def read_bids(self, pods: Sequence[Mapping[str, Any]]) -> None:
        """Pending pods of ours become bids, a gang's pods one bid; then the bids are ordered by
        their Wallet's priority (higher first), then by id, so that priority breaks ties (equal
        scores go to the earlier bid)."""
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for p in pods:
            spec = p.get("spec") or {}
            if spec.get("schedulerName") != self.cfg.scheduler_name or spec.get("nodeName"):
                continue
            if (p.get("status") or {}).get("phase", "Pending") != "Pending":
                continue
            gang = (_meta(p).get("labels") or {}).get(ANNOTATION_PREFIX + "gang")
            groups[_gang_key(p, gang) if gang else _full_name(p)].append(p)
        for bid_id, members in sorted(groups.items()):
            members = sorted(members, key=_full_name)
            try:
                self.bids.append(self._bid(bid_id, members))
            except (ValueError, AssertionError, ProblemError) as e:
                for p in members:
                    self.skip("Pod", p, str(e))
                continue
            self.pods_of_bid[bid_id] = tuple(_full_name(p) for p in members)
        self.bids.sort(key=lambda b: (-self.priority.get(b.wallet, 0), b.id))

    def _bid(self, bid_id: str, members: list[Mapping[str, Any]]) -> Bid:
        """The bid of pending pods (one, or a gang's); ValueError naming the field."""
        units = [_pod_unit(p, self.cfg) for p in members]
        if any(u is None for u in units):
            raise ValueError("spec.containers[].resources: no GPU requested")
        u0 = units[0]
        assert u0 is not None
        if any(u != u0 for u in units):
            raise ValueError("spec.containers[].resources: the gang's pods differ")
        anns = [_meta(p).get("annotations") or {} for p in members]
        value = sum(_number(a, "bid") for a in anns)
        wallets_named = {_pod_wallet(p, self.agents) for p in members}
        if len(wallets_named) != 1 or None in wallets_named:
            raise ValueError(f"metadata.annotations[{ANNOTATION_PREFIX}wallet]: missing or differs")
        wallet = str(wallets_named.pop())
        if wallet not in self.wallet_names:
            raise ValueError(f"metadata.annotations[{ANNOTATION_PREFIX}wallet]: no Wallet {wallet}")
        locality = anns[0].get(ANNOTATION_PREFIX + "locality", "any")
        if locality not in LOCALITIES:
            raise ValueError(
                f"metadata.annotations[{ANNOTATION_PREFIX}locality]: one of {LOCALITIES}"
            )
        alt = Alternative(
            value=value,
            unit=u0.unit,
            replicas=len(members),
            cpu_milli=u0.cpu_milli,
            memory_mib=u0.memory_mib,
            models=_allowed_models(u0, self.offered, self.extra),
            locality=locality,
        )
        alts = [alt]
        planned = self.planned_profiles.get(u0.profile or "")
        if planned and u0.unit.kind == "whole" and u0.unit.gpus == 1:
            # The same pods on MIG GPUs whose layout the round may plan (one instance each).
            mig_unit = Unit("mig", profile=u0.profile)
            alts.append(dataclasses.replace(alt, unit=mig_unit, models=tuple(sorted(planned))))
        return Bid(
            id=bid_id,
            bidder=_bidder(members[0], self.agents),
            wallet=wallet,
            alternatives=tuple(alts),
        )

    def snapshot(self, pods: Sequence[Mapping[str, Any]], round_id: str) -> Snapshot:
        """The Problem of what was read, and the bookkeeping to apply its Result."""
        problem = Problem(
            nodes=tuple(self.nodes),
            wallets=tuple(self.wallets),
            bids=tuple(self.bids),
            incumbents=tuple(self.incumbents),
            extra_models=tuple(self.extra.values()),
            round_id=round_id,
            reconfigure_cost=self.cfg.reconfigure_cost if self.mig_nodes else 0.0,
        )
        uids = {_full_name(p): str(_meta(p)["uid"]) for p in pods if _meta(p).get("uid")}
        created = {
            _full_name(p): _meta(p)["creationTimestamp"]
            for p in pods
            if _meta(p).get("creationTimestamp")
        }
        waits = {}
        for bid, names in self.pods_of_bid.items():
            times = [
                _timestamp(created[n], "metadata.creationTimestamp") for n in names if n in created
            ]
            if times:
                waits[bid] = max(0.0, (self.now - min(times)).total_seconds())
        return Snapshot(
            problem,
            self.pods_of_bid,
            self.pods_of_incumbent,
            tuple(self.skipped),
            uids,
            self.origins,
            MappingProxyType(self.agents),
            MappingProxyType(self.agent_wallets),
            MappingProxyType(self.mig_nodes),
            MappingProxyType(waits),
        )


def _bidder(pod: Mapping[str, Any], agents: Mapping[str, str]) -> str:
    """Who bids: the agent for an agent's pod, else the pod's namespace."""
    ns = str(_meta(pod).get("namespace"))
    return agents.get(ns, ns)
