"""MIG layouts planned from demand, end to end on the real API server.

Idle A100 nodes carved ``all-7g.80gb`` are re-carved to 1g instances when bids for 1g slices
win: the allocator writes the configuration into the MIG manager's ConfigMap and labels the node
``nvidia.com/mig.config``; the pods are bound only after the manager reports ``success`` and the
node advertises the instances. The MIG manager and the device plugin cannot run without a GPU,
so a test thread plays their documented label protocol (tests/harness/migmanager.py cites it),
including a slow change and a failed one; kwok plays the nodes' kubelets, and keeps the resources
the stand-in advertises. A node with a running pod is never re-carved.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api  # noqa: E402

import allocator.cluster.loop as loop  # noqa: E402
from allocator.cluster.api import create_wallet  # noqa: E402
from allocator.cluster.config import ClusterConfig  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402
from allocator.cluster.mig import (  # noqa: E402
    CONFIG_LABEL,
    FAILED_ANNOTATION,
    LAYOUT_ANNOTATION,
    PENDING_ANNOTATION,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from migmanager import STATE, MigManagerStandIn  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

pytestmark = pytest.mark.k8s


@pytest.fixture()
def admin_client(api_client: Any, control_plane: Any) -> Any:
    return api_client(control_plane.admin_token)


ONE, SEVEN = "nvidia.com/mig-1g.10gb", "nvidia.com/mig-7g.80gb"
CONFIG_MAP = "mig-parted-config"


def _config(ns: str) -> ClusterConfig:
    return ClusterConfig(
        mig_planning=True,
        mig_config_namespace=ns,
        mig_config_map=CONFIG_MAP,
        reconfigure_cost=1.0,
        mig_hold_s=3600,
    )


def _a100_node(gpu_world: Any, admin: Any, gpus: int = 2) -> str:
    """A kwok node of ``gpus`` A100-SXM4-80GB carved ``all-7g.80gb``, as the device plugin (mixed
    strategy) and GFD show it and the MIG manager last left it, returned once Ready."""
    name = f"a100-{uuid.uuid4().hex[:6]}"
    applied = {CONFIG_LABEL: "all-7g.80gb", STATE: "success"}
    return str(
        gpu_world.kwok_node(
            admin, name, gpus, "A100-SXM4-80GB", mig={"7g.80gb": gpus}, labels=applied
        )
    )


def _pod(core: Any, ns: str, name: str, resource: str, bid: str, node: str | None = None) -> None:
    req = {resource: "1"}
    spec: dict[str, Any] = {
        "schedulerName": "gpu-allocator" if node is None else "default-scheduler",
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/none",
                "resources": {"requests": req, "limits": req},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "annotations": {"gpualloc.io/bid": bid, "gpualloc.io/wallet": "w"}}
    core.create_namespaced_pod(ns, {"metadata": meta, "spec": spec})


def _namespace(core: Any, admin: Any) -> str:
    ns = f"migplan-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    create_wallet(admin, ns, "w", 1000)
    return ns


def _bound(core: Any, ns: str) -> dict[str, str]:
    return {
        p.metadata.name: p.spec.node_name
        for p in core.list_namespaced_pod(ns).items
        if p.spec.node_name
    }


def _wait(what: str, probe: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s")


def test_idle_all_7g_node_is_recarved_to_1g_and_pods_bound_after_success(
    admin_client: Any, gpualloc_crds: Any, gpu_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten 1g pods worth 5 each, one idle 2-GPU node in all-7g: round 1 asks for a layout with
    1g instances and binds nothing; round 2 runs while the (slow) change is pending and binds
    nothing; after ``success`` round 3 binds all ten to the instances the node advertises."""
    admin = admin_client
    core = CoreV1Api(admin)
    ns = _namespace(core, admin)
    node = _a100_node(gpu_world, admin)
    for i in range(10):
        _pod(core, ns, f"infer-{i}", ONE, "5")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    cfg = _config(ns)
    with MigManagerStandIn(admin, ns, CONFIG_MAP, [node], delay={node: 3.0}) as manager:
        first = run_once(admin, cfg, greedy(round_id="r-migplan-1"))
        assert [x.recarved for x in first.result.layouts] == [True, True]
        assert first.plan.bindings == () and _bound(core, ns) == {}
        meta = core.read_node(node).metadata
        config = meta.labels[CONFIG_LABEL]
        assert config.startswith("gpualloc-") and PENDING_ANNOTATION in meta.annotations
        assert [(c.node, c.config) for c in first.layout_changes] == [(node, config)]
        (entry,) = first.layout_changes[0].entries  # both GPUs alike: one mig-parted entry
        assert entry["devices"] == [0, 1] and entry["mig-enabled"] is True
        assert sum(entry["mig-devices"].values()) == 7 and "1g.10gb" in entry["mig-devices"]
        waiting = [n for n in first.plan.notices if n.reason == "WaitingForMigLayout"]
        assert len(waiting) == 10
        _wait(
            "pending state",
            lambda: core.read_node(node).metadata.labels.get(STATE) == "pending",
        )
        second = run_once(admin, cfg, greedy(round_id="r-migplan-2"))  # the change is still pending
        assert second.snapshot.problem.node(node).gpus == ()
        assert second.plan.bindings == () and _bound(core, ns) == {}
        _wait("success", lambda: manager.applied[node])
        done_at = manager.applied[node][-1][1]
        third = run_once(admin, cfg, greedy(round_id="r-migplan-3"))
    assert manager.errors == []
    assert time.monotonic() > done_at and len(third.plan.bindings) == 10
    bound = _bound(core, ns)
    assert set(bound.values()) == {node} and len(bound) == 10
    node_obj = core.read_node(node)
    advertised = int(node_obj.status.allocatable[ONE])
    assert advertised >= 10  # never bound to an instance the node does not advertise
    for name in bound:  # kwok, the node's kubelet, runs them
        gpu_world.running(core, ns, name)
    kept = core.read_node(node).status  # kwok keeps the resources the device plugin wrote
    assert kept.allocatable[ONE] == kept.capacity[ONE] == str(advertised)
    assert kept.allocatable[SEVEN] == "0"
    ann = node_obj.metadata.annotations
    assert LAYOUT_ANNOTATION in ann and PENDING_ANNOTATION not in ann
    cm = core.read_namespaced_config_map(CONFIG_MAP, ns)
    assert config in cm.data["config.yaml"] and "1g.10gb" in cm.data["config.yaml"]
    # Within the hold time the node keeps its layout: a 7g pod now loses, no new change.
    _pod(core, ns, "train", SEVEN, "50")
    fourth = run_once(admin, cfg, greedy(round_id="r-migplan-4"))
    assert core.read_node(node).metadata.labels[CONFIG_LABEL] == config
    assert fourth.result.layouts == () and "train" not in _bound(core, ns)


def test_a_failed_reconfiguration_binds_nothing_and_is_reported(
    admin_client: Any, gpualloc_crds: Any, gpu_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_client
    core = CoreV1Api(admin)
    ns = _namespace(core, admin)
    node = _a100_node(gpu_world, admin)
    for i in range(4):
        _pod(core, ns, f"infer-{i}", ONE, "5")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    cfg = _config(ns)
    with MigManagerStandIn(admin, ns, CONFIG_MAP, [node], fail=frozenset({node})) as manager:
        first = run_once(admin, cfg, greedy(round_id="r-migfail-1"))
        assert any(x.recarved for x in first.result.layouts)
        _wait("failure", lambda: manager.failed)
        second = run_once(admin, cfg, greedy(round_id="r-migfail-2"))
    assert manager.errors == []
    assert second.plan.bindings == () and _bound(core, ns) == {}
    failed = [n for n in second.plan.notices if n.reason == "MigLayoutFailed"]
    assert [n.name for n in failed] == [node] and failed[0].kind == "Node"
    ann = core.read_node(node).metadata.annotations
    assert FAILED_ANNOTATION in ann and PENDING_ANNOTATION not in ann
    # Offered as it is (two 7g instances), and not re-carved again within the hold time.
    assert Counter(g.model for g in second.snapshot.problem.node(node).gpus) == {
        "A100-SXM4-80GB-MIG-7g.80gb": 2
    }
    assert second.result.layouts == ()


def test_a_node_with_a_running_pod_is_never_recarved(
    admin_client: Any, gpualloc_crds: Any, gpu_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One of the node's two 7g instances is held by a pod of another scheduler; 1g bids worth
    far more than the cost leave the node's layout alone (one GPU is idle, but the MIG manager
    pauses the whole node's GPU add-ons, and a node is re-carved only when idle)."""
    admin = admin_client
    core = CoreV1Api(admin)
    ns = _namespace(core, admin)
    node = _a100_node(gpu_world, admin)
    _pod(core, ns, "running", SEVEN, "1", node=node)
    gpu_world.running(core, ns, "running")
    for i in range(7):
        _pod(core, ns, f"infer-{i}", ONE, "50")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    out = run_once(admin, _config(ns), greedy(round_id="r-migbusy-1"))
    assert out.result.layouts == ()
    labels = core.read_node(node).metadata.labels
    assert labels[CONFIG_LABEL] == "all-7g.80gb"
    assert PENDING_ANNOTATION not in (core.read_node(node).metadata.annotations or {})
    assert set(_bound(core, ns)) == {"running"}
