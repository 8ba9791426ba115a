"""Read a Kubernetes cluster into one round's Problem (pure: API JSON in, frozen data out).

Input is what the API server returns (camelCase JSON): ``Node`` objects, ``Pod`` objects and
``Wallet`` custom resources (``gpualloc.io/v1alpha1``). What becomes what:

- **Nodes**: allocatable CPU and memory, minus what pods that are not GPU work of ours already
  request there; ``nvidia.com/gpu`` allocatable GPUs of the model in ``nvidia.com/gpu.product``
  (suffixes ``-SHARED``/``-MIG-...`` dropped), shared (fractional) when the node's
  ``nvidia.com/gpu.sharing-strategy`` is ``time-slicing`` or ``mps``; rack and zone from the
  configured labels. MIG nodes (``nvidia.com/mig.strategy``) are not offered yet: the device plugin
  publishes instance counts but not their slices, which the market needs (listed in ``skipped``).
- **Pending pods** of ``spec.schedulerName`` == the allocator's name, not yet bound: bids. A pod
  requests ``nvidia.com/gpu: n`` (n whole GPUs on one node) or the share resource with
  ``gpualloc.io/gpu-milli``; ``gpualloc.io/bid`` is its value and ``gpualloc.io/wallet`` names a
  Wallet of its namespace. Pods with the same ``gpualloc.io/gang`` label in a namespace are one bid
  whose replicas are the pods (same requests), worth the sum, with ``gpualloc.io/locality``.
- **Running pods** holding GPUs: incumbents, at the GPUs of their ``gpualloc.io/gpus`` annotation
  (written at bind time) or, for pods placed by someone else, the node's lowest free indices.
  Pods of other schedulers are never preemptible; ours are unless ``gpualloc.io/preemptible`` is
  ``"false"``; ``gpualloc.io/preemption-cost`` adds to the welfare an eviction destroys.
- **Wallets**: ``<namespace>/<name>`` with balance ``spec.balance - status.spent``.

A malformed object never stops the round: it is left out and listed in ``Snapshot.skipped`` with
the field path and the reason, which the round reports as a Warning Event on the object.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from allocator.cluster.config import ANNOTATION_PREFIX, ClusterConfig
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
from allocator.model.catalog import GpuModel, whole_gpu_model

__all__ = ["Skipped", "Snapshot", "parse_quantity", "snapshot"]

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(\d+g\.\d+gb(?:\+me)?)$")
LOCALITIES = ("gpu", "nvlink", "node", "rack", "zone", "any")
_SUFFIXES = re.compile(r"-(SHARED|MIG-.*)$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


@dataclass(frozen=True, slots=True)
class Skipped:
    """An object left out of the round: its kind, ``namespace/name`` (a node: its name), the
    field and why, and its uid (which the Event about it names)."""

    kind: str
    name: str
    field: str
    reason: str
    uid: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One round's Problem and the bookkeeping to apply its Result.

    ``pods_of_bid`` maps a bid id to its pods (``namespace/name``, in replica order);
    ``pods_of_incumbent`` the same for incumbents; ``pod_uids`` the uid of every pod read (the
    Events about a pod name it).
    """

    problem: Problem
    pods_of_bid: Mapping[str, tuple[str, ...]]
    pods_of_incumbent: Mapping[str, tuple[str, ...]]
    skipped: tuple[Skipped, ...] = field(default=())
    pod_uids: Mapping[str, str] = field(default_factory=dict)


def parse_quantity(text: Any) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Gi``, ``1e3``) as a Decimal."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = m.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {text!r}") from None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    raise ValueError(f"unknown quantity suffix {suffix!r} in {text!r}")


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


def _model_name(product: str) -> str:
    return _SUFFIXES.sub("", product)


@dataclass
class _PodUnit:
    unit: Unit
    cpu_milli: int
    memory_mib: int


def _pod_unit(pod: Mapping[str, Any], cfg: ClusterConfig) -> _PodUnit | None:
    """The GPU unit a pod asks for (None: no GPU). Raises ValueError naming the field."""
    req = _requests(pod)
    ann = _meta(pod).get("annotations") or {}
    cpu = _cpu_milli(req.get("cpu", 0))
    mem = _memory_mib(req.get("memory", 0))
    gpus = req.get(GPU_RESOURCE, Decimal(0))
    share = req.get(cfg.share_resource, Decimal(0))
    migs = [k for k in req if MIG_RESOURCE.match(k) and req[k] > 0]
    kinds = (gpus > 0) + (share > 0) + bool(migs)
    if kinds == 0:
        return None
    if kinds > 1:
        raise ValueError("spec.containers[].resources: asks for more than one kind of GPU")
    if migs:
        raise ValueError(f"spec.containers[].resources.{migs[0]}: MIG is not read yet")
    if gpus > 0:
        if gpus != int(gpus):
            raise ValueError(f"spec.containers[].resources.{GPU_RESOURCE}: not a whole number")
        return _PodUnit(Unit("whole", gpus=int(gpus)), cpu, mem)
    key = ANNOTATION_PREFIX + "gpu-milli"
    raw = ann.get(key)
    try:
        milli = int(str(raw))
    except ValueError:
        raise ValueError(f"metadata.annotations[{key}]: not an integer: {raw!r}") from None
    if not 1 <= milli <= 999:
        raise ValueError(f"metadata.annotations[{key}]: must be in 1..999, got {milli}")
    return _PodUnit(Unit("share", milli=milli), cpu, mem)


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


def snapshot(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    wallets: Sequence[Mapping[str, Any]],
    config: ClusterConfig | None = None,
    round_id: str = "round",
) -> Snapshot:
    """Build the round's Problem from API objects (see the module docstring)."""
    cfg = config or ClusterConfig()
    skipped: list[Skipped] = []

    def skip(kind: str, obj: Mapping[str, Any], message: str) -> None:
        path, _, reason = message.partition(": ")
        uid = _meta(obj).get("uid")
        skipped.append(Skipped(kind, _full_name(obj), path, reason or message, uid))

    # Wallets. The CRD's schema rejects what is wrong here, but an object stored before the
    # schema was (or under a laxer one) is served as it is.
    wallet_list: list[Wallet] = []
    for w in wallets:
        try:
            spec = w.get("spec") or {}
            if "balance" not in spec:
                raise ValueError("spec.balance: missing")
            balance = _amount(spec["balance"], "spec.balance")
            spent = _amount((w.get("status") or {}).get("spent") or 0, "status.spent")
            wallet_list.append(Wallet(_full_name(w), max(balance - spent, 0.0)))
        except (ValueError, ProblemError) as e:
            skip("Wallet", w, str(e))
    wallet_names = {w.name for w in wallet_list}

    # GPU work already running, per node (ours and others').
    running: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    other_cpu: dict[str, int] = defaultdict(int)
    other_mem: dict[str, int] = defaultdict(int)
    for p in pods:
        if not _is_running(p):
            continue
        node = p["spec"]["nodeName"]
        try:
            unit = _pod_unit(p, cfg)
        except ValueError as e:
            skip("Pod", p, str(e))
            unit = None
        if unit is None:
            req = _requests(p)
            other_cpu[node] += _cpu_milli(req.get("cpu", 0))
            other_mem[node] += _memory_mib(req.get("memory", 0))
        else:
            running[node].append(p)

    # Nodes.
    node_list: list[Node] = []
    extra: dict[str, GpuModel] = {}
    free_gpus: dict[str, list[int]] = {}
    gpu_count: dict[str, int] = {}
    for n in nodes:
        meta = _meta(n)
        name = str(meta.get("name"))
        labels = meta.get("labels") or {}
        alloc = (n.get("status") or {}).get("allocatable") or {}
        try:
            cpu = _cpu_milli(alloc.get("cpu", 0)) - other_cpu[name]
            mem = _memory_mib(alloc.get("memory", 0)) - other_mem[name]
            count = int(parse_quantity(alloc.get(GPU_RESOURCE, 0)))
            if labels.get("nvidia.com/mig.strategy") in ("single", "mixed"):
                skipped.append(
                    Skipped(
                        "Node",
                        name,
                        "metadata.labels[nvidia.com/mig.strategy]",
                        "MIG nodes are not offered yet",
                        meta.get("uid"),
                    )
                )
                count = 0
            gpus: tuple[Gpu, ...] = ()
            if count > 0:
                product = labels.get("nvidia.com/gpu.product")
                if not product:
                    raise ValueError(
                        "metadata.labels[nvidia.com/gpu.product]: missing on a GPU node"
                    )
                model = _model_name(product)
                if model not in CATALOG and model not in extra:
                    memory_mib = float(labels.get("nvidia.com/gpu.memory", 16384))
                    extra[model] = whole_gpu_model(model, memory_mib / 1024.0)
                sharing = labels.get("nvidia.com/gpu.sharing-strategy", "none")
                mode = "shared" if sharing in ("time-slicing", "mps") else "whole"
                gpus = tuple(Gpu(index=i, model=model, mode=mode) for i in range(count))
            free_gpus[name] = list(range(count))
            gpu_count[name] = count
            node_list.append(
                Node(
                    name=name,
                    cpu_milli=max(cpu, 0),
                    memory_mib=max(mem, 0),
                    gpus=gpus,
                    rack=labels.get(cfg.rack_label),
                    zone=labels.get(cfg.zone_label),
                )
            )
        except (ValueError, ProblemError) as e:
            skip("Node", n, str(e))
    known_nodes = {n.name for n in node_list}

    # Incumbents: running GPU pods at their GPUs.
    incumbents: list[Incumbent] = []
    pods_of_incumbent: dict[str, tuple[str, ...]] = {}
    for node in sorted(running):
        if node not in known_nodes:
            continue
        for p in running[node]:
            ann = _meta(p).get("annotations") or {}
            try:
                pu = _pod_unit(p, cfg)
                assert pu is not None
                ours = (p.get("spec") or {}).get("schedulerName") == cfg.scheduler_name
                raw = ann.get(ANNOTATION_PREFIX + "gpus")
                want = pu.unit.gpus if pu.unit.kind == "whole" else 1
                try:
                    idx = [int(x) for x in str(raw).split(",")] if raw else free_gpus[node][:want]
                except ValueError:
                    idx = []
                if len(idx) != want or any(not 0 <= i < gpu_count[node] for i in idx):
                    raise ValueError(
                        f"metadata.annotations[{ANNOTATION_PREFIX}gpus]: {raw!r} does not name "
                        f"{want} GPU(s) of {node}"
                    )
                if pu.unit.kind == "whole":
                    for i in idx:
                        if i not in free_gpus[node]:
                            raise ValueError(f"spec.nodeName: GPU {i} of {node} is taken twice")
                        free_gpus[node].remove(i)
                    placement = Placement(node, tuple(idx))
                else:
                    placement = Placement(node, (idx[0],), milli=pu.unit.milli)
                preemptible = ours and ann.get(ANNOTATION_PREFIX + "preemptible", "true") != "false"
                inc_id = _full_name(p)
                wallet = ann.get(ANNOTATION_PREFIX + "wallet")
                wallet_full = f"{_meta(p).get('namespace')}/{wallet}" if wallet else None
                incumbents.append(
                    Incumbent(
                        id=inc_id,
                        bidder=str(_meta(p).get("namespace")),
                        value=_number(ann, "bid", 0.0),
                        placements=(placement,),
                        cpu_milli=pu.cpu_milli,
                        memory_mib=pu.memory_mib,
                        preemptible=preemptible,
                        preemption_cost=_number(ann, "preemption-cost", 0.0),
                        wallet=wallet_full if wallet_full in wallet_names else None,
                    )
                )
                pods_of_incumbent[inc_id] = (inc_id,)
            except (ValueError, AssertionError, ProblemError) as e:
                skip("Pod", p, str(e))

    # Bids: pending pods of ours, gangs grouped.
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for p in pods:
        spec = p.get("spec") or {}
        if spec.get("schedulerName") != cfg.scheduler_name or spec.get("nodeName"):
            continue
        if (p.get("status") or {}).get("phase", "Pending") != "Pending":
            continue
        meta = _meta(p)
        gang = (meta.get("labels") or {}).get(ANNOTATION_PREFIX + "gang")
        key = f"{meta.get('namespace')}/gang/{gang}" if gang else _full_name(p)
        groups[key].append(p)
    bids: list[Bid] = []
    pods_of_bid: dict[str, tuple[str, ...]] = {}
    for bid_id, members in sorted(groups.items()):
        members = sorted(members, key=_full_name)
        first = members[0]
        try:
            units = [_pod_unit(p, cfg) for p in members]
            if any(u is None for u in units):
                raise ValueError("spec.containers[].resources: no GPU requested")
            u0 = units[0]
            assert u0 is not None
            if any(u != u0 for u in units):
                raise ValueError("spec.containers[].resources: the gang's pods differ")
            anns = [_meta(p).get("annotations") or {} for p in members]
            value = sum(_number(a, "bid") for a in anns)
            wallets_named = {a.get(ANNOTATION_PREFIX + "wallet") for a in anns}
            if len(wallets_named) != 1 or None in wallets_named:
                raise ValueError(
                    f"metadata.annotations[{ANNOTATION_PREFIX}wallet]: missing or differs"
                )
            wallet = f"{_meta(first).get('namespace')}/{wallets_named.pop()}"
            if wallet not in wallet_names:
                raise ValueError(
                    f"metadata.annotations[{ANNOTATION_PREFIX}wallet]: no Wallet {wallet}"
                )
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
                locality=locality,
            )
            bids.append(
                Bid(
                    id=bid_id,
                    bidder=str(_meta(first).get("namespace")),
                    wallet=wallet,
                    alternatives=(alt,),
                )
            )
            pods_of_bid[bid_id] = tuple(_full_name(p) for p in members)
        except (ValueError, AssertionError, ProblemError) as e:
            for p in members:
                skip("Pod", p, str(e))

    problem = Problem(
        nodes=tuple(node_list),
        wallets=tuple(wallet_list),
        bids=tuple(bids),
        incumbents=tuple(incumbents),
        extra_models=tuple(extra.values()),
        round_id=round_id,
    )
    uids = {_full_name(p): str(_meta(p)["uid"]) for p in pods if _meta(p).get("uid")}
    return Snapshot(problem, pods_of_bid, pods_of_incumbent, tuple(skipped), uids)
