"""Settings of the Kubernetes reader and writer (validated; loadable from a dict/TOML table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANNOTATION_PREFIX = "gpualloc.io/"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where the allocator finds its workloads and the cluster's topology.

    Parameters
    ----------
    scheduler_name
        Pods with this ``spec.schedulerName`` are the allocator's to place.
    rack_label, zone_label
        Node label keys of the rack and zone (racks have no standard key; make it yours).
    share_resource
        The extended resource a fractional-share pod requests (the device plugin's renamed
        time-slicing resource); its milli-GPU come from the ``gpualloc.io/gpu-milli`` annotation.
    """

    scheduler_name: str = "gpu-allocator"
    rack_label: str = "topology.gpualloc.io/rack"
    zone_label: str = "topology.kubernetes.io/zone"
    share_resource: str = "nvidia.com/gpu.shared"

    def __post_init__(self) -> None:
        for name in ("scheduler_name", "rack_label", "zone_label", "share_resource"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """From a TOML table or dict with the same keys; unknown keys are an error."""
        known = {"scheduler_name", "rack_label", "zone_label", "share_resource"}
        extra = set(data) - known
        if extra:
            raise ValueError(f"{sorted(extra)[0]}: unknown setting (known: {sorted(known)})")
        return cls(**data)
