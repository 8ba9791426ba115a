"""MIG against the real API server: kwok nodes advertise instances as NVIDIA's device plugin does
under the mixed strategy (with GFD's labels), pods ask for ``nvidia.com/mig-<profile>`` and
whole GPUs; a round binds each to a node that has the instances, never more per profile per node
than advertised, charges the wallet, and the next round counts the bound pods (running: kwok
starts them) as incumbents."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

import allocator.cluster.loop as loop  # noqa: E402
from allocator.cluster.api import create_wallet  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402

pytestmark = pytest.mark.k8s

ONE, THREE = "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"


def _mixed_node(
    world: Any, admin: Any, product: str, gpus: int, mig: dict[str, int], whole: int = 0
) -> str:
    """A kwok node of ``gpus`` GPUs under the mixed strategy: ``mig`` = {profile: count} as
    ``nvidia.com/mig-<profile>`` and ``whole`` GPUs with MIG off as ``nvidia.com/gpu``, with
    GFD's labels (the MIG manager's config labels and each profile's memory among them)."""
    labels = {"nvidia.com/mig.config": "custom-config", "nvidia.com/mig.config.state": "success"}
    for profile in mig:
        labels[f"nvidia.com/mig-{profile}.memory"] = "9728" if "1g" in profile else "40192"
    name = f"mig-{uuid.uuid4().hex[:6]}"
    return str(world.kwok_node(admin, name, gpus, product, mig=mig, whole=whole, labels=labels))


def _pod(
    core: Any,
    ns: str,
    name: str,
    requests: dict[str, int],
    bid: str,
    node: str | None = None,
    scheduler: str = "gpu-allocator",
) -> None:
    counts = {key: str(n) for key, n in requests.items()}
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/none",
                "resources": {"requests": counts, "limits": counts},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "annotations": {"gpualloc.io/bid": bid, "gpualloc.io/wallet": "w"}}
    core.create_namespaced_pod(ns, {"metadata": meta, "spec": spec})


def _held(core: Any, ns: str) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    """The namespace's pods by name, and how many of each resource every node has handed out."""
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(ns).items}
    held: Counter[tuple[str, str]] = Counter()
    for p in pods.values():
        if p.spec.node_name:
            for key, value in p.spec.containers[0].resources.requests.items():
                held[(p.spec.node_name, key)] += int(value)
    return pods, held


def test_mig_round_binds_instances_and_counts_them_next_round(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """Node A: 1 GPU with MIG off, three 1g.10gb and one 3g.40gb instance; node B: two 1g.10gb,
    one held by another scheduler's pod. Two pods want two 1g.10gb each: only A has two free, so
    one wins; the 3g.40gb pod and one 1-GPU pod win on A, at the indices the reader gives them;
    a second 1-GPU pod does not fit (the free instances are no GPUs); a 1-instance pod gets one.
    The wallet pays what the round says. A node advertising a profile its product lacks and a
    pod asking for MIG and a GPU at once are left out, each with a Skipped Warning Event on it.
    Next round exactly one 1g.10gb instance is left, and of two new 1-instance pods exactly one
    is bound there: the bound pods are incumbents."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = f"mig-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    create_wallet(admin, ns, "w", 50)
    one, three = ONE.removeprefix("nvidia.com/mig-"), THREE.removeprefix("nvidia.com/mig-")
    advertised = {  # A: one GPU with MIG off and one carved 3g + 3 x 1g; B: one H100, 2 x 1g
        _mixed_node(gpu_world, admin, "A100-SXM4-80GB", 2, {one: 3, three: 1}, whole=1): "A",
        _mixed_node(gpu_world, admin, "H100-80GB", 1, {one: 2}): "B",
    }
    node_a, node_b = advertised
    capacity = {
        (node_a, "nvidia.com/gpu"): 1,
        (node_a, ONE): 3,
        (node_a, THREE): 1,
        (node_b, ONE): 2,
    }
    _pod(core, ns, "theirs", {ONE: 1}, "0", node=node_b, scheduler="default-scheduler")
    _pod(core, ns, "pair-high", {ONE: 2}, "9")
    _pod(core, ns, "pair-low", {ONE: 2}, "8")
    _pod(core, ns, "three", {THREE: 1}, "6")
    _pod(core, ns, "gpu-high", {"nvidia.com/gpu": 1}, "5")
    _pod(core, ns, "gpu-low", {"nvidia.com/gpu": 1}, "4")
    _pod(core, ns, "one", {ONE: 1}, "2")
    # Malformed: an A100-80GB has no 1g.5gb profile; a pod cannot ask for MIG and GPUs at once.
    bad_node = _mixed_node(gpu_world, admin, "A100-SXM4-80GB", 1, {"1g.5gb": 2})
    _pod(core, ns, "both", {ONE: 1, "nvidia.com/gpu": 1}, "3")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node_a, node_b, bad_node))

    out = run_once(admin, options=greedy(round_id="r-mig-1"))
    assert {(s.kind, s.name, s.field) for s in out.snapshot.skipped} == {
        ("Node", bad_node, "status.allocatable[nvidia.com/mig-1g.5gb]"),
        ("Pod", f"{ns}/both", "spec.containers[].resources"),
    }
    for kind, where, uid in (
        ("Node", "default", core.read_node(bad_node).metadata.uid),
        ("Pod", ns, core.read_namespaced_pod("both", ns).metadata.uid),
    ):
        events = core.list_namespaced_event(where, field_selector=f"involvedObject.uid={uid}")
        assert [(e.reason, e.type) for e in events.items] == [("Skipped", "Warning")], kind
    assert out.report is not None and out.report.problems == [] and out.report.bound == 4
    pods, held = _held(core, ns)
    on = {name: p.spec.node_name for name, p in pods.items()}
    gpus = {
        name: sorted(int(i) for i in p.metadata.annotations["gpualloc.io/gpus"].split(","))
        for name, p in pods.items()
        if p.metadata.annotations and "gpualloc.io/gpus" in p.metadata.annotations
    }
    assert on["pair-high"] == node_a and on["pair-low"] is None
    assert on["three"] == node_a and gpus["three"] == [4]
    assert on["gpu-high"] == node_a and gpus["gpu-high"] == [0]
    assert on["gpu-low"] is None
    assert set(gpus["pair-high"]) <= {1, 2, 3}
    assert on["one"] in (node_a, node_b)
    if on["one"] == node_a:  # A's last 1g.10gb instance
        assert gpus["one"] == sorted({1, 2, 3} - set(gpus["pair-high"]))
    else:  # B's second: 'theirs' holds the lowest
        assert gpus["one"] == [1]
    assert all(held[key] <= capacity.get(key, 0) for key in held), held
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "w"
    )
    paid = sum(w.payment for w in out.result.winners)
    assert paid > 0 and wallet["status"]["spent"] == pytest.approx(paid)
    assert [e["round"] for e in wallet["status"]["ledger"]] == ["r-mig-1"]

    _pod(core, ns, "late-high", {ONE: 1}, "1")
    _pod(core, ns, "late-low", {ONE: 1}, "0.5")
    again = run_once(admin, options=greedy(round_id="r-mig-2"))
    assert {s.name for s in again.snapshot.skipped} == {bad_node, f"{ns}/both"}
    assert {i.id for i in again.snapshot.problem.incumbents} == {
        f"{ns}/{name}" for name in ("theirs", "pair-high", "three", "gpu-high", "one")
    }
    assert again.plan.evictions == () and again.report is not None
    assert again.report.bound == 1 and again.report.problems == []
    pods, held = _held(core, ns)
    assert pods["late-low"].spec.node_name is None
    assert pods["late-high"].spec.node_name is not None
    assert held[(node_a, ONE)] == 3 and held[(node_b, ONE)] == 2
    assert all(held[key] <= capacity.get(key, 0) for key in held), held
    for n in (*advertised, bad_node):
        core.delete_node(n)
    core.delete_namespace(ns)
