"""Faults against the real API server: a pod deleted or a node removed between read and bind, a
conflicting wallet update (409), an eviction refused by a PodDisruptionBudget (its node takes no
new pod; evictions come before bindings), and the API server stopped in the middle of an apply
and restarted, after which the next run completes the round: no pod bound twice, every charge
matches a binding, no wallet negative."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

import allocator.cluster.loop as loop  # noqa: E402
from allocator.cluster import api as cluster_api  # noqa: E402
from allocator.cluster.api import apply_plan  # noqa: E402
from allocator.cluster.plan import Charge  # noqa: E402

pytestmark = pytest.mark.k8s
G, V = "gpualloc.io", "v1alpha1"


class _Forwarding:
    """A stand-in for a client class of the kubernetes package: calls go to the real class
    ``real`` (taken before the test patches it), except the methods a subclass overrides."""

    real: Any

    def __init__(self, api: Any) -> None:
        self._c = type(self).real(api)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)


def _wallet(admin: Any, ns: str) -> dict[str, Any]:
    w: dict[str, Any] = CustomObjectsApi(admin).get_namespaced_custom_object(
        G, V, ns, "wallets", "w"
    )
    return w


def test_pod_deleted_and_node_removed_between_read_and_bind(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """The plan binds two pods; one is deleted and, in a second cluster, the node is removed
    before the apply: those are reported, nothing crashes, and only bound pods are charged."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 4)
    gpu_world.pod(core, ns, "a", 2, "10")
    gpu_world.pod(core, ns, "b", 2, "10")
    gpu_world.pod(core, ns, "c", 2, "4")  # outbid: it sets the price (4 each)
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    out = loop.run_once(admin, options=greedy(round_id="r-f1", dry_run=True))
    assert len(out.plan.bindings) == 2
    core.delete_namespaced_pod("b", ns, grace_period_seconds=0)
    report = apply_plan(admin, out.plan)
    assert report.bound == 1 and any(p.startswith(f"{ns}/b:") for p in report.problems)
    assert dict(out.plan.charges[0].pods) == pytest.approx({f"{ns}/a": 4.0, f"{ns}/b": 4.0})
    assert _wallet(admin, ns)["status"]["spent"] == pytest.approx(4.0)  # a only

    ns2, node2 = gpu_world.cluster(admin, 2)
    gpu_world.pod(core, ns2, "c", 1, "4")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns2, node2))
    out2 = loop.run_once(admin, options=greedy(round_id="r-f2", dry_run=True))
    core.delete_node(node2)
    report2 = apply_plan(admin, out2.plan)
    assert report2.bound == 0 and report2.problems == [f"{ns2}/c: node {node2} is gone"]
    assert core.read_namespaced_pod("c", ns2).spec.node_name is None
    assert "status" not in _wallet(admin, ns2) or not _wallet(admin, ns2)["status"].get("spent")


def test_wallet_conflict_is_retried(
    api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any, gpu_world: Any
) -> None:
    """A wallet changed by someone else between read and write (a real 409 from the server) is
    read again and charged once, keeping the other writer's change."""
    admin = api_client(control_plane.admin_token)
    ns, _ = gpu_world.cluster(admin, 1)
    custom = CustomObjectsApi(admin)
    real_custom = cluster_api.k8s.CustomObjectsApi
    meddled = []

    class Meddling(_Forwarding):
        """The real client, plus one concurrent status write right after the first read."""

        real = real_custom

        def get_namespaced_custom_object(self, *args: Any) -> Any:
            got = self._c.get_namespaced_custom_object(*args)
            if not meddled:
                meddled.append(1)
                custom.patch_namespaced_custom_object_status(
                    G, V, ns, "wallets", "w", {"status": {"lastRound": "someone-else"}}
                )
            return got

    report = cluster_api.ApplyReport()
    cluster_api._charge(Meddling(admin), Charge(f"{ns}/w", 7.0, ((f"{ns}/x", 7.0),)), "r-c", report)
    assert report.charged == 1 and report.problems == []
    status = _wallet(admin, ns)["status"]
    assert status["spent"] == pytest.approx(7.0)
    assert [e["round"] for e in status["ledger"]] == ["r-c"]


def test_api_server_restart_mid_apply_then_next_run_completes_the_round(
    api_client: Callable[[str], Any],
    control_plane: Any,
    control_plane_processes: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """The API server dies after the first of three bindings; the run fails. After a restart the
    next run first completes the recorded round: every winner bound once, the wallet charged
    exactly the plan's amount once, never negative."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 6)
    for name in ("p1", "p2", "p3"):
        gpu_world.pod(core, ns, name, 2, "10")
    gpu_world.pod(core, ns, "p4", 2, "3")  # outbid: the price is 3 each
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    real_core = cluster_api.k8s.CoreV1Api
    bindings = []

    class Dying(_Forwarding):
        real = real_core

        def create_namespaced_pod_binding(self, *args: Any, **kw: Any) -> Any:
            out = self._c.create_namespaced_pod_binding(*args, **kw)
            bindings.append(args[0])
            if len(bindings) == 1:
                control_plane_processes.stop_apiserver()
            return out

    monkeypatch.setattr(cluster_api.k8s, "CoreV1Api", Dying)
    with pytest.raises(Exception):  # noqa: B017 (the connection error type is the client's)
        loop.run_once(admin, options=greedy(round_id="r-crash", record_namespace=ns))
    control_plane_processes.start_apiserver()
    monkeypatch.setattr(cluster_api.k8s, "CoreV1Api", real_core)

    nxt = loop.run_once(admin, options=greedy(round_id="r-next", record_namespace=ns))
    assert nxt.repaired == ("r-crash",)
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(ns).items}
    assert pods.pop("p4").spec.node_name is None
    assert all(p.spec.node_name == node for p in pods.values())
    gpus = [g for p in pods.values() for g in p.metadata.annotations["gpualloc.io/gpus"].split(",")]
    assert sorted(gpus) == ["0", "1", "2", "3", "4", "5"]  # no GPU given twice
    status = _wallet(admin, ns)["status"]
    crash_round = CustomObjectsApi(admin).get_namespaced_custom_object(
        G, V, ns, "allocationrounds", "r-crash"
    )
    assert crash_round["status"]["phase"] == "Applied"
    planned = sum(c["amount"] for c in crash_round["status"]["charges"])
    assert [e["round"] for e in status["ledger"]] == ["r-crash"]
    assert planned == pytest.approx(9.0)
    assert status["spent"] == pytest.approx(planned) and 0 <= status["spent"] <= 50


def _running_pod(
    core: Any, ns: str, name: str, node: str, gpus: str, guard: bool, world: Any | None
) -> None:
    """A pod of ours running on ``node``, holding GPUs ``gpus`` (bid 1: cheap to evict). On a
    kwok node (``world`` given) its kubelet, kwok, starts it: this returns once it is Running and
    Ready (a Pending pod ignores disruption budgets). On a node where no kubelet runs
    (``world`` None) the test reports it Running and Ready itself, as a kubelet would have."""
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {
                "name": name,
                "labels": {"guard": "yes" if guard else "no"},
                "annotations": {
                    "gpualloc.io/bid": "1",
                    "gpualloc.io/wallet": "w",
                    "gpualloc.io/gpus": gpus,
                },
            },
            "spec": {
                "schedulerName": "gpu-allocator",
                "nodeName": node,
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.invalid/none",
                        "resources": {
                            "requests": {"nvidia.com/gpu": "2"},
                            "limits": {"nvidia.com/gpu": "2"},
                        },
                    }
                ],
            },
        },
    )
    if world is not None:
        world.running(core, ns, name)
        return
    core.patch_namespaced_pod_status(
        name,
        ns,
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )


def test_evictions_come_first_and_a_refused_one_keeps_its_node_free(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """Two full 2-GPU nodes, each with a cheap running pod, and two rich pending pods: the plan
    evicts both and binds one new pod on each node, applied with 8 workers. Every eviction is
    answered before the first binding is sent; the eviction a PodDisruptionBudget refuses (a
    real 429) keeps the new pod off that node (reported, not charged, no Won event), while the
    other node's pod is bound and charged."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, free_node = gpu_world.cluster(admin, 2)
    guarded_node = gpu_world.node(admin, 2)
    _running_pod(core, ns, "old-free", free_node, "0,1", guard=False, world=gpu_world)
    _running_pod(core, ns, "old-guarded", guarded_node, "0,1", guard=True, world=gpu_world)
    kubernetes.client.PolicyV1Api(admin).create_namespaced_pod_disruption_budget(
        ns,
        {
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"guard": "yes"}}},
        },
    )
    gpu_world.pod(core, ns, "new-1", 2, "20")
    gpu_world.pod(core, ns, "new-2", 2, "20")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, free_node, guarded_node))
    out = loop.run_once(admin, options=greedy(round_id="r-evict", dry_run=True))
    assert sorted(e.pod for e in out.plan.evictions) == [f"{ns}/old-free", f"{ns}/old-guarded"]
    assert {e.node for e in out.plan.evictions} == {free_node, guarded_node}
    to_guarded = next(b.pod for b in out.plan.bindings if b.node == guarded_node)
    to_free = next(b.pod for b in out.plan.bindings if b.node == free_node)

    real_core = cluster_api.k8s.CoreV1Api
    calls: list[str] = []

    class Recording(_Forwarding):
        """The real client, noting when each eviction is answered and each binding is sent."""

        real = real_core

        def create_namespaced_pod_eviction(self, *args: Any, **kw: Any) -> Any:
            try:
                return self._c.create_namespaced_pod_eviction(*args, **kw)
            finally:
                calls.append("evicted")

        def create_namespaced_pod_binding(self, *args: Any, **kw: Any) -> Any:
            calls.append("bind")
            return self._c.create_namespaced_pod_binding(*args, **kw)

    monkeypatch.setattr(cluster_api.k8s, "CoreV1Api", Recording)
    report = apply_plan(admin, out.plan, workers=8)  # kwok finishes the evicted pod
    # The binding waited for the evicted pod to be gone; the refused one still runs.
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("old-free", ns)
    assert gone.value.status == 404
    guarded = core.read_namespaced_pod("old-guarded", ns)
    assert guarded.metadata.deletion_timestamp is None and guarded.status.phase == "Running"
    assert calls == ["evicted", "evicted", "bind"], report.problems
    assert report.evicted == 1 and report.bound == 1
    assert any(p.startswith(f"{ns}/old-guarded: eviction failed (429") for p in report.problems)
    assert f"{to_guarded}: not bound to {guarded_node}: evicting {ns}/old-guarded failed" in (
        report.problems
    )
    assert core.read_namespaced_pod(to_free.split("/")[1], ns).spec.node_name == free_node
    assert core.read_namespaced_pod(to_guarded.split("/")[1], ns).spec.node_name is None
    (charge,) = _wallet(admin, ns)["status"]["ledger"]
    assert [c["pod"] for c in charge["charges"]] == [to_free]
    won = {
        e.involved_object.name for e in core.list_namespaced_event(ns).items if e.reason == "Won"
    }
    assert won == {to_free.split("/")[1]}


def test_binding_waits_for_the_evicted_pod_to_be_gone(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """The kubelet refuses a pod whose devices a terminating pod still holds, so the winner is
    bound only once the evicted pod is gone. Here no kubelet finishes it (a node kwok does not
    run: a kubelet that stopped answering): after waiting the round leaves the winner pending
    (reported, not charged); the next round sees the terminating pod as holding its GPUs and
    not evictable (no binding, no second eviction); once it is gone, the round after binds and
    charges the winner."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = gpu_world.namespace(admin)
    node = gpu_world.unmanaged_node(admin, 2)  # no kubelet: the evicted pod stays terminating
    _running_pod(core, ns, "old", node, "0,1", guard=False, world=None)
    gpu_world.pod(core, ns, "new", 2, "20")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))

    first = loop.run_once(admin, options=greedy(round_id="r-wait-1", eviction_wait=1.0))
    assert first.report is not None and first.report.evicted == 1 and first.report.bound == 0
    assert f"{ns}/new: not bound to {node} yet: {ns}/old still terminating after 1 s" in (
        " ".join(first.report.problems)
    )
    assert core.read_namespaced_pod("old", ns).metadata.deletion_timestamp is not None
    assert core.read_namespaced_pod("new", ns).spec.node_name is None
    (planned,) = first.plan.charges  # it would have paid for the eviction ...
    assert planned.amount > 0 and planned.pods[0][0] == f"{ns}/new"
    assert not (_wallet(admin, ns).get("status") or {}).get("ledger")  # ... but was not bound

    second = loop.run_once(admin, options=greedy(round_id="r-wait-2", eviction_wait=1.0))
    (held,) = second.snapshot.problem.incumbents
    assert held.id == f"{ns}/old" and not held.preemptible
    assert second.plan.bindings == () and second.plan.evictions == ()

    # What the kubelet does once the containers have stopped: remove the pod for good.
    core.delete_namespaced_pod("old", ns, grace_period_seconds=0)
    gpu_world.gone(core, ns, "old")
    third = loop.run_once(admin, options=greedy(round_id="r-wait-3", eviction_wait=1.0))
    assert third.report is not None and third.report.bound == 1, third.report
    assert core.read_namespaced_pod("new", ns).spec.node_name == node
    # Nothing left to evict and no rival: its critical price is now the reserve, 0.
    assert third.plan.charges == ()
    assert not (_wallet(admin, ns).get("status") or {}).get("ledger")


def test_bindings_needing_no_evicted_room_do_not_wait(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """A round that evicts on one node and places on another free one (kwok's): the pod going to
    the free node is bound at once, while the one needing the evicted room waits (here in vain:
    the busy node is one kwok does not run, so no kubelet finishes the victim) and stays
    pending."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, free_node = gpu_world.cluster(admin, 2)
    busy_node = gpu_world.unmanaged_node(admin, 2)  # no kubelet: the victim stays terminating
    _running_pod(core, ns, "old", busy_node, "0,1", guard=False, world=None)
    gpu_world.pod(core, ns, "first", 2, "20")
    gpu_world.pod(core, ns, "second", 2, "19")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, busy_node, free_node))
    bound_at: dict[str, float] = {}
    real_bind = cluster_api._bind

    def timed_bind(core_: Any, b: Any, round_id: str, report: Any) -> bool:
        ok: bool = real_bind(core_, b, round_id, report)
        bound_at[b.pod] = time.monotonic()
        return ok

    monkeypatch.setattr(cluster_api, "_bind", timed_bind)
    start = time.monotonic()
    out = loop.run_once(admin, options=greedy(round_id="r-split", eviction_wait=3.0))
    took = time.monotonic() - start
    assert out.report is not None and out.report.evicted == 1 and out.report.bound == 1
    assert {b.pod: b.node for b in out.plan.bindings} == {
        f"{ns}/first": free_node,
        f"{ns}/second": busy_node,
    }
    assert core.read_namespaced_pod("first", ns).spec.node_name == free_node
    assert core.read_namespaced_pod("second", ns).spec.node_name is None
    assert list(bound_at) == [f"{ns}/first"]
    assert took >= 3.0 and bound_at[f"{ns}/first"] - start < took - 2.0, (took, bound_at)
