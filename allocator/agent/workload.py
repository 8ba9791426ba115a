"""A workload as the agent asks for it, and the pods that carry its bid (pure: no I/O).

A workload is one bid: ``replicas`` pods asking for the same GPU unit (whole GPUs, instances of
one MIG profile, or a milli-GPU share). More than one replica is a gang (label
``gpualloc.io/gang``), whose pods the allocator reads as one bid worth the sum of their
``gpualloc.io/bid`` annotations: :func:`split_bid` splits the workload's value so that the sum
is exactly that value in any order of addition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal

from allocator.model import LOCALITIES

__all__ = [
    "ANNOTATION_BID",
    "ANNOTATION_GANG_SIZE",
    "ANNOTATION_GPUS",
    "ANNOTATION_GPU_MILLI",
    "ANNOTATION_LOCALITY",
    "ANNOTATION_MAX_PRICE",
    "ANNOTATION_PRICE",
    "ANNOTATION_ROUND",
    "ANNOTATION_WALLET",
    "DEFAULT_IMAGE",
    "GPU_RESOURCE",
    "LABEL_GANG",
    "LABEL_WORKLOAD",
    "SCHEDULER_NAME",
    "SHARE_RESOURCE",
    "UnitKind",
    "WorkloadSpec",
    "mig_resource",
    "profile_of_resource",
    "spec_from_pods",
    "split_bid",
]

PREFIX = "gpualloc.io/"
ANNOTATION_BID = PREFIX + "bid"
ANNOTATION_WALLET = PREFIX + "wallet"
ANNOTATION_LOCALITY = PREFIX + "locality"
ANNOTATION_GPU_MILLI = PREFIX + "gpu-milli"
#: The SDK's own: the most the agent lets a policy raise the workload's bid to (not read by
#: the allocator).
ANNOTATION_MAX_PRICE = PREFIX + "max-price"
#: The SDK's own: how many pods the gang has (not read by the allocator yet).
ANNOTATION_GANG_SIZE = PREFIX + "gang-size"
# Written by the allocator when it binds a pod.
ANNOTATION_GPUS = PREFIX + "gpus"
ANNOTATION_ROUND = PREFIX + "round"
ANNOTATION_PRICE = PREFIX + "price"
LABEL_GANG = PREFIX + "gang"
#: The SDK's own label on every pod of a workload (its name), to list them.
LABEL_WORKLOAD = PREFIX + "workload"

SCHEDULER_NAME = "gpu-allocator"
GPU_RESOURCE = "nvidia.com/gpu"
SHARE_RESOURCE = "nvidia.com/gpu.shared"
DEFAULT_IMAGE = "registry.k8s.io/pause:3.10"
_MIG_PREFIX = "nvidia.com/mig-"

#: Keys the SDK writes itself (or the allocator does): extra labels and annotations may not set
#: them.
SDK_ANNOTATIONS = frozenset(
    {
        ANNOTATION_BID,
        ANNOTATION_LOCALITY,
        ANNOTATION_GPU_MILLI,
        ANNOTATION_MAX_PRICE,
        ANNOTATION_GANG_SIZE,
        ANNOTATION_GPUS,
        ANNOTATION_ROUND,
        ANNOTATION_PRICE,
    }
)
SDK_LABELS = frozenset({LABEL_GANG, LABEL_WORKLOAD})

UnitKind = Literal["whole", "mig", "share"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb(?:[+.]me)?$")
_QUANTITY = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def mig_resource(profile: str) -> str:
    """The extended resource of a MIG profile (mixed strategy): ``1g.10gb+me`` ->
    ``nvidia.com/mig-1g.10gb.me``."""
    return _MIG_PREFIX + profile.replace("+", ".")


def profile_of_resource(resource: str) -> str | None:
    """The MIG profile of ``nvidia.com/mig-<profile>`` (``.me`` read as ``+me``), else None."""
    if not resource.startswith(_MIG_PREFIX):
        return None
    text = resource.removeprefix(_MIG_PREFIX)
    if not _PROFILE.match(text):
        return None
    return text[: -len(".me")] + "+me" if text.endswith(".me") else text


def split_bid(total: float, pods: Sequence[str]) -> dict[str, str]:
    """Per-pod ``gpualloc.io/bid`` values of a workload worth ``total``: ``total / len(pods)``
    rounded down to a multiple of the float spacing at ``total``, the remainder on the last
    pod. Every part and every partial sum is then a multiple of that spacing below ``total``,
    so each is exact and the parts add up to exactly ``total`` in any order (the reader's sum)."""
    if not pods:
        raise ValueError("pods: none to split the bid over")
    step = math.ulp(total) if total > 0 else 0.0
    share = math.floor(total / len(pods) / step) * step if step else 0.0
    parts = {pod: share for pod in pods}
    parts[pods[-1]] = total - share * (len(pods) - 1)
    return {pod: repr(value) for pod, value in parts.items()}


def _check_quantity(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise ValueError(f"{name}: not a Kubernetes quantity (e.g. 500m, 2, 4Gi): {value!r}")
    return value


def _check_amount(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: not a number: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
    return float(value)


def _check_count(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: not an integer: {value!r}")
    if value < low or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}: must be {span}, got {value}")
    return value


def _check_keys(extra: Any, name: str, reserved: frozenset[str]) -> Mapping[str, str]:
    if not isinstance(extra, Mapping):
        raise ValueError(f"{name}: not a mapping: {extra!r}")
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise ValueError(f"{name}: keys and values must be strings: {k!r}: {v!r}")
        if k in reserved:
            raise ValueError(f"{name}: {k} is set by the SDK (use the argument instead)")
    return MappingProxyType(dict(extra))


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload: ``replicas`` pods, each asking for ``gpus`` whole GPUs, or ``gpus``
    instances of MIG profile ``mig_profile``, or a ``milli``-GPU share; worth ``bid`` in all
    (split over the pods). Unset, ``gpus`` is 1 (whole GPUs or MIG instances); a share takes no
    ``gpus``. ``max_price`` caps what a policy may raise the bid to. ``labels`` and
    ``annotations`` are added to every pod (not the SDK's own keys). ValueError naming the
    argument on anything invalid."""

    name: str
    bid: float
    gpus: int | None = None
    mig_profile: str | None = None
    milli: int | None = None
    replicas: int = 1
    locality: str = "any"
    cpu: str = "1"
    memory: str = "1Gi"
    image: str = DEFAULT_IMAGE
    max_price: float | None = None
    command: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    scheduler_name: str = SCHEDULER_NAME
    share_resource: str = SHARE_RESOURCE

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        replicas = _check_count(self.replicas, "replicas", 1, 10_000)
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"name: must be a DNS label (lower-case letters, digits, '-'): {self.name!r}"
            )
        longest = self.name if replicas == 1 else f"{self.name}-{replicas - 1}"
        if len(longest) > 63:
            raise ValueError(f"name: too long (pod {longest!r} is over 63 characters)")
        set_(self, "bid", _check_amount(self.bid, "bid"))
        if self.milli is not None:
            if self.gpus is not None or self.mig_profile is not None:
                raise ValueError("milli: a share takes neither gpus nor mig_profile")
            _check_count(self.milli, "milli", 1, 999)
        else:
            set_(self, "gpus", _check_count(1 if self.gpus is None else self.gpus, "gpus", 1))
        if self.mig_profile is not None:
            if not isinstance(self.mig_profile, str) or not _PROFILE.match(self.mig_profile):
                raise ValueError(
                    f"mig_profile: not a MIG profile name (e.g. 1g.10gb, 3g.40gb): "
                    f"{self.mig_profile!r}"
                )
            set_(self, "mig_profile", self.mig_profile.replace(".me", "+me"))
        if self.locality not in LOCALITIES:
            raise ValueError(f"locality: must be one of {', '.join(LOCALITIES)}")
        _check_quantity(self.cpu, "cpu")
        _check_quantity(self.memory, "memory")
        if not isinstance(self.image, str) or not self.image.strip():
            raise ValueError(f"image: must be a non-empty string, got {self.image!r}")
        if self.max_price is not None:
            set_(self, "max_price", _check_amount(self.max_price, "max_price"))
            if self.bid > self.max_price:
                raise ValueError(f"max_price: {self.max_price:g} is below the bid {self.bid:g}")
        if isinstance(self.command, str) or not all(isinstance(c, str) for c in self.command):
            raise ValueError(f"command: must be a list of strings, got {self.command!r}")
        set_(self, "command", tuple(self.command))
        set_(self, "labels", _check_keys(self.labels, "labels", SDK_LABELS))
        set_(self, "annotations", _check_keys(self.annotations, "annotations", SDK_ANNOTATIONS))
        for name in ("scheduler_name", "share_resource"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")

    @property
    def kind(self) -> UnitKind:
        """``whole`` GPUs, ``mig`` instances or a ``share``."""
        if self.milli is not None:
            return "share"
        return "mig" if self.mig_profile is not None else "whole"

    @property
    def resource(self) -> tuple[str, int]:
        """The extended resource each pod requests, and how many."""
        if self.milli is not None:
            return self.share_resource, 1
        assert self.gpus is not None
        if self.mig_profile is not None:
            return mig_resource(self.mig_profile), self.gpus
        return GPU_RESOURCE, self.gpus

    @property
    def gpu_equivalents(self) -> float:
        """GPU-equivalents of the whole workload, as the market prices them: a whole GPU is 1,
        a share milli/1000, a MIG instance its compute slices over 7 (A100, H100, H200; the
        exact figure depends on the product the allocator picks)."""
        if self.milli is not None:
            return self.replicas * self.milli / 1000
        assert self.gpus is not None
        per = 1.0
        if self.mig_profile is not None:
            m = _PROFILE.match(self.mig_profile.replace("+me", ""))
            assert m is not None
            per = int(m.group(1)) / 7
        return self.replicas * self.gpus * per

    @property
    def pod_names(self) -> tuple[str, ...]:
        """``name`` for one replica; ``name-0`` .. ``name-(replicas-1)`` for a gang."""
        if self.replicas == 1:
            return (self.name,)
        return tuple(f"{self.name}-{i}" for i in range(self.replicas))

    def with_changes(self, **changes: Any) -> WorkloadSpec:
        """A copy with fields replaced (validated again)."""
        return replace(self, **changes)

    def pods(self) -> list[dict[str, Any]]:
        """The pod manifests (API JSON) that carry this workload."""
        names = self.pod_names
        bids = split_bid(self.bid, sorted(names))
        resource, count = self.resource
        requests: dict[str, str] = {"cpu": self.cpu, "memory": self.memory, resource: str(count)}
        container: dict[str, Any] = {
            "name": "main",
            "image": self.image,
            "resources": {"requests": requests, "limits": {resource: str(count)}},
        }
        if self.command:
            container["command"] = list(self.command)
        manifests = []
        for pod in names:
            labels = {**self.labels, LABEL_WORKLOAD: self.name}
            annotations = {
                **self.annotations,
                ANNOTATION_BID: bids[pod],
                ANNOTATION_LOCALITY: self.locality,
            }
            if self.replicas > 1:
                labels[LABEL_GANG] = self.name
                annotations[ANNOTATION_GANG_SIZE] = str(self.replicas)
            if self.milli is not None:
                annotations[ANNOTATION_GPU_MILLI] = str(self.milli)
            if self.max_price is not None:
                annotations[ANNOTATION_MAX_PRICE] = repr(self.max_price)
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod, "labels": labels, "annotations": annotations},
                    "spec": {
                        "schedulerName": self.scheduler_name,
                        "containers": [
                            {**container, "resources": _copy_resources(container["resources"])}
                        ],
                    },
                }
            )
        return manifests


def _copy_resources(res: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {k: dict(v) for k, v in res.items()}


def _float(text: Any, what: str) -> float:
    try:
        value = float(Decimal(str(text)))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what}: not a number: {text!r}") from None
    return value


def spec_from_pods(pods: Sequence[Mapping[str, Any]]) -> WorkloadSpec:
    """The spec of the workload these pods (API JSON, all of one workload) carry: its name from
    the ``gpualloc.io/workload`` label, the bid summed over the pods, the unit and the rest from
    the first pod. ValueError when the pods are not an SDK workload."""
    if not pods:
        raise ValueError("pods: none")
    ordered = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name")))
    meta = ordered[0].get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    name = labels.get(LABEL_WORKLOAD)
    if not name:
        raise ValueError(f"metadata.labels[{LABEL_WORKLOAD}]: missing")
    bid = 0.0
    for p in ordered:
        ann = (p.get("metadata") or {}).get("annotations") or {}
        bid += _float(ann.get(ANNOTATION_BID), f"metadata.annotations[{ANNOTATION_BID}]")
    spec = ordered[0].get("spec") or {}
    containers = spec.get("containers") or [{}]
    c = containers[0]
    requests = dict((c.get("resources") or {}).get("limits") or {})
    requests.update((c.get("resources") or {}).get("requests") or {})
    gpus: int | None = None
    profile: str | None = None
    milli: int | None = None
    share_resource = SHARE_RESOURCE
    gpu_keys = [k for k in requests if k not in ("cpu", "memory", "ephemeral-storage")]
    if len(gpu_keys) != 1:
        raise ValueError(f"spec.containers[0].resources: not one GPU resource: {gpu_keys}")
    key = gpu_keys[0]
    if ANNOTATION_GPU_MILLI in annotations:
        milli = int(annotations[ANNOTATION_GPU_MILLI])
        share_resource = key
    else:
        gpus = int(str(requests[key]))
        if key != GPU_RESOURCE:
            profile = profile_of_resource(key)
            if profile is None:
                raise ValueError(f"spec.containers[0].resources: unknown GPU resource {key}")
    max_price = annotations.get(ANNOTATION_MAX_PRICE)
    return WorkloadSpec(
        name=name,
        bid=bid,
        gpus=gpus,
        mig_profile=profile,
        milli=milli,
        replicas=len(ordered),
        locality=annotations.get(ANNOTATION_LOCALITY, "any"),
        cpu=str(requests.get("cpu", "1")),
        memory=str(requests.get("memory", "1Gi")),
        image=str(c.get("image") or DEFAULT_IMAGE),
        max_price=None if max_price is None else _float(max_price, ANNOTATION_MAX_PRICE),
        command=tuple(c.get("command") or ()),
        labels={k: v for k, v in labels.items() if k not in SDK_LABELS},
        annotations={k: v for k, v in annotations.items() if k not in SDK_ANNOTATIONS},
        scheduler_name=str(spec.get("schedulerName") or SCHEDULER_NAME),
        share_resource=share_resource,
    )
