"""The reader against the real API server: objects created through the API are read back, turned
into a Problem that solves and verifies, and a malformed pod is skipped without stopping it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api  # noqa: E402

from allocator import solve, verify  # noqa: E402
from allocator.cluster import snapshot  # noqa: E402
from allocator.cluster.api import create_wallet, fetch  # noqa: E402

pytestmark = pytest.mark.k8s


def _pod(name: str, gpus: int, bid: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "gpu-allocator",
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/none",
                "resources": {
                    "requests": {"nvidia.com/gpu": str(gpus), "cpu": "1"},
                    "limits": {"nvidia.com/gpu": str(gpus)},
                },
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "annotations": {"gpualloc.io/bid": bid, "gpualloc.io/wallet": "w"},
        },
        "spec": spec,
    }


def test_read_solve_verify(
    api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any, gpu_world: Any
) -> None:
    """Two GPU nodes (kwok's), a wallet, three pending pods (one malformed) and one bound pod
    (running: kwok starts it), created through the API, read back and solved: the result is
    valid and the bad pod is reported."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    tag = uuid.uuid4().hex[:6]
    ns = f"read-{tag}"
    core.create_namespace({"metadata": {"name": ns}})
    nodes = [f"gpu-a-{tag}", f"gpu-b-{tag}"]
    for n in nodes:
        gpu_world.kwok_node(admin, n, 4)
    create_wallet(admin, ns, "w", 50)
    core.create_namespaced_pod(ns, _pod("big", 4, "30"))
    core.create_namespaced_pod(ns, _pod("small", 2, "12"))
    core.create_namespaced_pod(ns, _pod("bad", 1, "lots"))
    core.create_namespaced_pod(ns, _pod("running", 2, "8", node=nodes[0]))
    gpu_world.running(core, ns, "running")

    all_nodes, pods, wallets = fetch(admin)
    mine = [p for p in pods if p["metadata"]["namespace"] == ns]
    snap = snapshot(
        [n for n in all_nodes if n["metadata"]["name"] in nodes],
        mine,
        [w for w in wallets if w["metadata"]["namespace"] == ns],
        round_id=f"r-{tag}",
    )
    problem = snap.problem
    assert sorted(b.id for b in problem.bids) == [f"{ns}/big", f"{ns}/small"]
    assert [i.id for i in problem.incumbents] == [f"{ns}/running"]
    assert [(s.name, s.field) for s in snap.skipped] == [
        (f"{ns}/bad", "metadata.annotations[gpualloc.io/bid]")
    ]
    result = solve(problem, solver="greedy")
    assert verify(problem, result) == []
    assert {w.bid_id for w in result.winners} == {f"{ns}/big", f"{ns}/small"}
    for n in nodes:
        core.delete_node(n)
    core.delete_namespace(ns)
