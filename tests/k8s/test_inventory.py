"""``gpu-allocator inventory --publish`` against the real API server: the Node's
``gpualloc.io/inventory`` annotation is written, and the reader (fetch + snapshot) gives the
node's GPUs the NVLink domains in it, so that an NVLink gang is placed inside one of them.

No GPU is on the machines these tests run on, so NVML is faked: ``tests/harness/fake_nvml.py``
is a ``pynvml`` module object with the semantics of the NVML API reference
(https://docs.nvidia.com/deploy/nvml-api/), built from the H200 recorded in
``docs/hardware/h200-nvml-mig.json``; the API server is real, and kwok plays the node's kubelet.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from fake_nvml import FakeNvml, h200, nvlink_groups  # noqa: E402  (tests/harness, conftest)
from kubernetes.client import CoreV1Api  # noqa: E402

from allocator import solve, verify  # noqa: E402
from allocator.cli import main  # noqa: E402
from allocator.cluster import snapshot  # noqa: E402
from allocator.cluster.api import create_wallet, fetch  # noqa: E402
from allocator.cluster.inventory import INVENTORY_ANNOTATION, node_inventory  # noqa: E402

pytestmark = pytest.mark.k8s


def _gpu_node(gpu_world: Any, admin: Any, gpus: int) -> str:
    """A kwok node advertising ``gpus`` H200s as the device plugin and GFD do, once Ready."""
    return str(gpu_world.kwok_node(admin, f"inv-{uuid.uuid4().hex[:6]}", gpus, "NVIDIA-H200"))


def test_publish_writes_the_annotation_and_the_reader_uses_its_domains(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`inventory --publish` (node from NODE_NAME, --interval with --max-runs 2) on a machine of
    eight H200s NVLinked in two groups of four writes the annotation, leaving the node's labels
    alone; the reader gives GPUs 0-3 and 4-7 two domains, and a pod asking for four GPUs with
    nvlink locality gets one whole domain."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    node = _gpu_node(gpu_world, admin, 8)
    links = nvlink_groups(8, [[0, 1, 2, 3], [4, 5, 6, 7]])
    monkeypatch.setitem(
        sys.modules, "pynvml", FakeNvml([h200(i, links=links[i]) for i in range(8)])
    )
    monkeypatch.setenv("NODE_NAME", node)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "admin", control_plane.admin_token)
    argv = ["inventory", "--publish", "--interval", "0.1", "--max-runs", "2"]
    assert main([*argv, "--kubeconfig", str(kubeconfig)]) == 0
    err = capsys.readouterr().err
    assert err.count(f"node {node}: published 8 GPUs") == 2
    assert "NVLink domains {0,1,2,3} {4,5,6,7}" in err

    stored = admin.sanitize_for_serialization(core.read_node(node))
    assert stored["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    doc = json.loads(stored["metadata"]["annotations"][INVENTORY_ANNOTATION])
    assert doc["version"] == 1 and len(doc["gpus"]) == 8
    inv = node_inventory(stored)
    assert inv is not None and inv.nvlink_domains() == ((0, 1, 2, 3), (4, 5, 6, 7))

    ns = f"inv-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    create_wallet(admin, ns, "w", 50)
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {
                "name": "gang",
                "annotations": {
                    "gpualloc.io/bid": "20",
                    "gpualloc.io/wallet": "w",
                    "gpualloc.io/locality": "nvlink",
                },
            },
            "spec": {
                "schedulerName": "gpu-allocator",
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.invalid/none",
                        "resources": {"limits": {"nvidia.com/gpu": "4"}},
                    }
                ],
            },
        },
    )
    nodes, pods, wallets = fetch(admin)
    snap = snapshot(
        [n for n in nodes if n["metadata"]["name"] == node],
        [p for p in pods if p["metadata"]["namespace"] == ns],
        [w for w in wallets if w["metadata"]["namespace"] == ns],
    )
    assert snap.skipped == ()
    (read,) = snap.problem.nodes
    assert [g.nvlink for g in read.gpus] == ["nvlink0"] * 4 + ["nvlink1"] * 4
    result = solve(snap.problem)
    assert verify(snap.problem, result) == []
    ((placement,),) = [w.placements for w in result.winners]
    assert placement.gpus in ((0, 1, 2, 3), (4, 5, 6, 7))


def test_publish_to_a_missing_node_fails_clearly(
    control_plane: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Publishing to a Node that does not exist: exit 1, the API server's 404 in one line."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([h200(0)]))
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "admin", control_plane.admin_token)
    argv = ["inventory", "--publish", "--node", "no-such-node", "--kubeconfig", str(kubeconfig)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: patching Node no-such-node: 404") and "Traceback" not in err
