"""Settings of the Kubernetes reader and writer (validated; loadable from a dict/TOML table)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANNOTATION_PREFIX = "gpualloc.io/"
#: Label of an agent's host namespace and of its Wallet: the agent's name.
AGENT_LABEL = "gpualloc.io/agent"


def agent_namespace(name: str) -> str:
    """The host namespace of agent ``name`` (where vcluster syncs its pods)."""
    return "vc-" + name


def agent_wallet(name: str) -> str:
    """The Wallet (``namespace/name``) agent ``name`` pays from."""
    return f"{agent_namespace(name)}/{name}"


#: Longest agent name: ``vc-NAME``, ``vc-workload-NAME`` and vcluster's derived names stay short.
AGENT_NAME_MAX = 40
# A DNS-1123 label that starts with a letter: vcluster's Service in the host namespace is named
# NAME, and Service names must be RFC 1035 labels (no leading digit).
_AGENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_agent_name(name: object) -> str:
    """``name`` if it can name an agent (a DNS-1123 label of at most 40 characters that starts
    with a letter), else ValueError saying why."""
    if not isinstance(name, str) or not _AGENT_NAME.match(name) or len(name) > AGENT_NAME_MAX:
        raise ValueError(
            f"must be a DNS-1123 label of at most {AGENT_NAME_MAX} characters that starts with "
            f"a letter (a-z, 0-9 and '-', ending with a letter or digit), got {name!r}"
        )
    return name


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
    mig_planning
        Plan MIG layouts from demand (see :mod:`allocator.cluster.mig`): idle MIG nodes may be
        re-carved through the GPU Operator's MIG manager. Off by default.
    mig_config_namespace, mig_config_map
        The ConfigMap (key ``config.yaml``, mig-parted's format) the MIG manager reads, where the
        allocator adds the configurations it needs (the GPU Operator's ``migManager.config.name``).
    reconfigure_cost
        Welfare one GPU's re-carving costs (it is unavailable meanwhile, about a minute).
    mig_hold_s
        Seconds a node's layout is kept after it changed (or a change failed): no flapping.
    """

    scheduler_name: str = "gpu-allocator"
    rack_label: str = "topology.gpualloc.io/rack"
    zone_label: str = "topology.kubernetes.io/zone"
    share_resource: str = "nvidia.com/gpu.shared"
    mig_planning: bool = False
    mig_config_namespace: str = "gpu-operator"
    mig_config_map: str = "gpu-allocator-mig-parted-config"
    reconfigure_cost: float = 1.0
    mig_hold_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in (
            "scheduler_name",
            "rack_label",
            "zone_label",
            "share_resource",
            "mig_config_namespace",
            "mig_config_map",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
        if not isinstance(self.mig_planning, bool):
            raise ValueError(f"mig_planning: must be true or false, got {self.mig_planning!r}")
        for name in ("reconfigure_cost", "mig_hold_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name}: must be a number >= 0, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """From a TOML table or dict with the same keys; unknown keys are an error."""
        known = {
            "scheduler_name",
            "rack_label",
            "zone_label",
            "share_resource",
            "mig_planning",
            "mig_config_namespace",
            "mig_config_map",
            "reconfigure_cost",
            "mig_hold_s",
        }
        extra = set(data) - known
        if extra:
            raise ValueError(f"{sorted(extra)[0]}: unknown setting (known: {sorted(known)})")
        return cls(**data)
