"""Faults and bad input from agents with their own control planes: a malformed bid refused with
an event the agent sees, a pod deleted during a round not charged, an agent whose control plane
stopped keeps its running pods while the others' rounds go on, an agent made and removed between
rounds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from agentlab import kwok_node, limited_fetch, wait_for  # noqa: E402
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402

import allocator.cluster.loop as loop  # noqa: E402
from allocator.agent import AgentClient  # noqa: E402
from allocator.cluster.agents import AgentSpec, create_agent, delete_agent  # noqa: E402
from allocator.cluster.options import RoundOptions  # noqa: E402
from allocator.cluster.publish import AgentClusters  # noqa: E402


def _limit(monkeypatch: pytest.MonkeyPatch, namespaces: set[str], nodes: set[str]) -> None:
    """Rounds see only these namespaces and nodes (other tests share the lab's host)."""
    monkeypatch.setattr(loop, "fetch", limited_fetch(namespaces, nodes))


@pytest.fixture()
def make_agent(lab: Any) -> Iterator[Any]:
    """A factory: (balance) -> a started agent with a ``work`` namespace and an SDK client
    (``.sdk``); every agent made is removed at the end."""
    made: list[str] = []
    host = lab.host_client()

    def make(balance: float = 100.0) -> Any:
        name = f"f{uuid.uuid4().hex[:6]}"
        create_agent(host, AgentSpec(name=name, balance=balance))
        made.append(name)
        plane = lab.agent(name)
        plane.start()
        CoreV1Api(plane.client()).create_namespace({"metadata": {"name": "work"}})
        plane.sdk = AgentClient(api_client=plane.client(), namespace="work")
        return plane

    yield make
    for name in made:
        if name in lab.agents:
            lab.remove_agent(name)
        delete_agent(host, name)


def _synced(host: Any, ns: str, count: int) -> list[Any]:
    return wait_for(
        f"{count} pod(s) synced to {ns}",
        lambda: len(items := CoreV1Api(host).list_namespaced_pod(ns).items) == count and items,
    )


def _events(plane: Any, pod: str) -> list[Any]:
    items = CoreV1Api(plane.client()).list_namespaced_event("work").items
    return [e for e in items if e.involved_object.name == pod]


def test_a_malformed_bid_is_refused_and_the_agent_sees_why(
    lab: Any, make_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod whose bid annotation is not a number is left out of the round: a Skipped event
    naming the annotation reaches the agent's own cluster, and its market ConfigMap lists the
    pod as skipped; the agent's well-formed pod wins beside it."""
    host = lab.host_client()
    plane = make_agent()
    node = kwok_node(host, f"kw-{plane.name}", 4)
    plane.sdk.submit("good", bid=3.0, gpus=1)
    CoreV1Api(plane.client()).create_namespaced_pod(
        "work",
        {
            "metadata": {"name": "bad", "annotations": {"gpualloc.io/bid": "plenty"}},
            "spec": {
                "schedulerName": "gpu-allocator",
                "containers": [
                    {"name": "m", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            },
        },
    )
    _synced(host, plane.host_namespace, 2)
    _limit(monkeypatch, {plane.host_namespace}, {node})
    outcome = loop.run_once(host)
    assert len(outcome.result.winners) == 1
    skipped = wait_for(
        "a Skipped event on the bad pod in the agent's cluster",
        lambda: [e for e in _events(plane, "bad") if e.reason == "Skipped"],
    )
    assert "gpualloc.io/bid" in skipped[0].message
    market = plane.sdk.market()
    assert market is not None
    assert market.outcomes["work/bad"].outcome == "skipped"
    assert market.outcomes["work/good"].outcome == "won"


def test_a_pod_the_agent_deletes_during_a_round_is_not_charged(
    lab: Any, make_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent deletes its winning pod after the round read the cluster and before it
    applies: the binding fails on the vanished pod, nothing is charged, the round completes."""
    host = lab.host_client()
    plane = make_agent()
    node = kwok_node(host, f"kw-{plane.name}", 2)
    plane.sdk.submit("fleeting", bid=4.0, gpus=1)
    plane.sdk.submit("rival", bid=3.0, gpus=2)  # gives the winner a price above 0
    _synced(host, plane.host_namespace, 2)
    _limit(monkeypatch, {plane.host_namespace}, {node})
    real_apply = loop.apply_plan

    def apply_after_the_agent_deleted(api: Any, plan: Any, *args: Any) -> Any:
        assert [b.origin for b in plan.bindings] == [f"agent {plane.name}: work/fleeting"]
        plane.sdk.withdraw("fleeting")
        wait_for(
            "the host pod gone",
            lambda: len(CoreV1Api(host).list_namespaced_pod(plane.host_namespace).items) == 1,
        )
        return real_apply(api, plan, *args)

    monkeypatch.setattr(loop, "apply_plan", apply_after_the_agent_deleted)
    outcome = loop.run_once(host)
    (winner,) = outcome.result.winners
    assert winner.payment > 0  # the rival sets a price: an uncharged win is not for free
    assert outcome.report is not None and outcome.report.bound == 0
    assert outcome.report.charged == 0
    wallet = CustomObjectsApi(host).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", plane.host_namespace, "wallets", plane.name
    )
    assert (wallet.get("status") or {}).get("spent", 0) == 0


def test_a_stopped_control_plane_keeps_its_pods_and_the_market_goes_on(
    lab: Any, make_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent A's pod runs; A's control plane stops (syncer, API server, etcd). The next round
    keeps A's pod where it is (an incumbent holding its GPUs), places agent B's new pod on the
    free GPUs, tells B and reports A as unreachable instead of failing."""
    host = lab.host_client()
    a, b = make_agent(), make_agent()
    node = kwok_node(host, f"kw-{a.name}", 4)
    _limit(monkeypatch, {a.host_namespace, b.host_namespace}, {node})
    a.sdk.submit("steady", bid=5.0, gpus=2)
    _synced(host, a.host_namespace, 1)
    loop.run_once(host)
    wait_for(
        "A's pod Running in A's cluster",
        lambda: a.sdk.status("steady").phase == "running",
    )
    a.stop_control_plane()
    b.sdk.submit("newcomer", bid=1.0, gpus=2)
    _synced(host, b.host_namespace, 1)
    outcome = loop.run_once(
        host, options=RoundOptions(agent_clusters=AgentClusters(host, timeout=2.0))
    )
    (host_pod,) = CoreV1Api(host).list_namespaced_pod(a.host_namespace).items
    assert host_pod.spec.node_name == node and host_pod.status.phase == "Running"
    assert [i.id for i in outcome.snapshot.problem.incumbents] == [
        f"{a.host_namespace}/{host_pod.metadata.name}"
    ]
    (winner,) = outcome.result.winners
    assert set(winner.placements[0].gpus).isdisjoint(
        int(g) for g in host_pod.metadata.annotations["gpualloc.io/gpus"].split(",")
    )
    assert outcome.published is not None
    assert outcome.published.written == [b.name]
    assert list(outcome.published.failed) == [a.name]
    assert b.sdk.market() is not None


def test_an_agent_made_and_removed_between_rounds(
    lab: Any, make_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent created after a round takes part in the next; once removed (control plane
    stopped, `agent delete`, and what the namespace controller would then delete), the next
    round neither fails nor tries to tell it."""
    host = lab.host_client()
    first = make_agent()
    node = kwok_node(host, f"kw-{first.name}", 4)
    namespaces = {first.host_namespace}
    _limit(monkeypatch, namespaces, {node})
    first.sdk.submit("one", bid=1.0, gpus=1)
    _synced(host, first.host_namespace, 1)
    assert loop.run_once(host).published.written == [first.name]
    late = make_agent()
    namespaces.add(late.host_namespace)
    late.sdk.submit("two", bid=1.0, gpus=1)
    _synced(host, late.host_namespace, 1)
    outcome = loop.run_once(host)
    assert sorted(outcome.published.written) == sorted([first.name, late.name])
    assert len(outcome.result.winners) == 1
    lab.remove_agent(late.name)
    delete_agent(host, late.name)
    # No kube-controller-manager runs here: do what its namespace controller would.
    core, custom = CoreV1Api(host), CustomObjectsApi(host)
    for pod in core.list_namespaced_pod(late.host_namespace).items:
        core.delete_namespaced_pod(pod.metadata.name, late.host_namespace, grace_period_seconds=0)
    custom.delete_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", late.host_namespace, "wallets", late.name
    )
    outcome = loop.run_once(host)
    assert outcome.published.written == [first.name]
    assert outcome.published.failed == {}
