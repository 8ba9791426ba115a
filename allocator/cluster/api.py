"""Fetch what the reader needs from a live API server (the only module importing kubernetes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s

from allocator.cluster.config import ClusterConfig

__all__ = ["WALLET_GROUP", "WALLET_VERSION", "fetch"]

WALLET_GROUP = "gpualloc.io"
WALLET_VERSION = "v1alpha1"


def fetch(
    api: Any, config: ClusterConfig | None = None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes, pods (all namespaces) and Wallets as the API's JSON, for
    :func:`allocator.cluster.read.snapshot`. ``api`` is a ``kubernetes.client.ApiClient``."""
    del config  # every pod is read: others' running pods hold GPUs and CPU too
    core = k8s.CoreV1Api(api)
    custom = k8s.CustomObjectsApi(api)
    nodes = api.sanitize_for_serialization(core.list_node().items)
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces().items)
    listed: Any = custom.list_cluster_custom_object(WALLET_GROUP, WALLET_VERSION, "wallets")
    return list(nodes), list(pods), list(listed["items"])
