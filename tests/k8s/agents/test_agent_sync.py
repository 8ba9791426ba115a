"""An agent with its own control plane (etcd, kube-apiserver, vcluster's syncer in its own network
namespace) bids through its own API server; the host's allocator rounds place, charge and tell
it, through the syncer and the agent's ConfigMap; the admission policy refuses what cheats."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from agentlab import kwok_node, limited_fetch, wait_for  # noqa: E402
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402

from allocator.agent import AgentClient  # noqa: E402
from allocator.cluster.agents import AgentSpec, create_agent, delete_agent  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402
from allocator.cluster.options import RoundOptions  # noqa: E402

WAIT_S = 60.0


@pytest.fixture()
def agent(lab: Any) -> Iterator[Any]:
    """A fresh agent: its host side made by ``create_agent``, its control plane started."""
    name = f"a{uuid.uuid4().hex[:6]}"
    host = lab.host_client()
    create_agent(host, AgentSpec(name=name, balance=100.0, priority=1))
    control_plane = lab.agent(name)
    control_plane.start()
    yield control_plane
    lab.remove_agent(name)
    delete_agent(host, name)


def _events(api: Any, namespace: str, pod: str) -> list[Any]:
    listed = CoreV1Api(api).list_namespaced_event(namespace)
    return [e for e in listed.items if e.involved_object.name == pod]


def test_a_bid_from_the_agents_cluster_wins_runs_and_is_reported_back(
    lab: Any, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pods created in the agent's own API server (no wallet named) are synced to vc-NAME
    and compete for a 2-GPU kwok node in a host round: the winner pays the loser's bid from
    the agent's Wallet, is bound and Running there; the agent sees, in its own cluster: the pod
    Running on that node with its GPUs and price, the Won event, the loser's Outbid event with
    the numbers, and the gpualloc-market ConfigMap with both outcomes and the charged wallet."""
    host = lab.host_client()
    node = kwok_node(host, f"kw-{agent.name}", 2)
    client = AgentClient(api_client=agent.client(), namespace="team1")
    CoreV1Api(agent.client()).create_namespace({"metadata": {"name": "team1"}})
    client.submit("serve", bid=12.0, gpus=2)
    client.submit("batch", bid=5.0, gpus=2)
    host_ns = agent.host_namespace
    synced = wait_for(
        "both pods synced to the host",
        lambda: len(items := CoreV1Api(host).list_namespaced_pod(host_ns).items) == 2 and items,
    )
    assert {p.metadata.annotations["vcluster.loft.sh/object-name"] for p in synced} == {
        "serve",
        "batch",
    }
    monkeypatch.setattr("allocator.cluster.loop.fetch", limited_fetch({host_ns}, {node}))
    outcome = run_once(host, options=RoundOptions(round_id=f"r-{agent.name}-1"))
    (winner,) = outcome.result.winners
    assert winner.payment == pytest.approx(5.0)  # the critical value: the loser's bid
    assert outcome.published is not None and outcome.published.written == [agent.name]

    vcore = CoreV1Api(agent.client())
    pod = wait_for(
        "the agent's pod Running",
        lambda: (p := vcore.read_namespaced_pod("serve", "team1")).status.phase == "Running" and p,
    )
    assert pod.spec.node_name == node
    ann = pod.metadata.annotations
    assert ann["gpualloc.io/gpus"] == "0,1"
    assert float(ann["gpualloc.io/price"]) == pytest.approx(winner.payment)
    won = wait_for(
        "a Won event in the agent's cluster",
        lambda: [e for e in _events(agent.client(), "team1", "serve") if e.reason == "Won"],
    )
    assert f"agent {agent.name}: team1/serve" in won[0].message
    market = client.market()
    assert market is not None and market.round_id == f"r-{agent.name}-1"
    assert market.outcomes["team1/serve"].outcome == "won"
    lost = market.outcomes["team1/batch"]
    assert lost.outcome == "outbid" and lost.bid == 5.0 and lost.detail
    outbid = wait_for(
        "an Outbid event in the agent's cluster",
        lambda: [e for e in _events(agent.client(), "team1", "batch") if e.reason == "Outbid"],
    )
    assert "agent " + agent.name + ": team1/batch: outbid" in outbid[0].message
    assert market.wallet is not None
    assert market.wallet.spent == pytest.approx(winner.payment)
    wallet = CustomObjectsApi(host).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", host_ns, "wallets", agent.name
    )
    assert wallet["status"]["spent"] == pytest.approx(winner.payment)


def test_the_admission_policy_refuses_a_cheating_pod_and_the_agent_sees_why(
    lab: Any, agent: Any
) -> None:
    """A pod setting nodeName and one naming another agent's wallet never reach the host: the
    syncer's create is denied by the host's admission policy and the agent sees the denial as
    an event on its pod in its own cluster; an honest pod beside them is synced."""
    vcore = CoreV1Api(agent.client())
    vcore.create_namespace({"metadata": {"name": "team1"}})
    node = kwok_node(lab.host_client(), f"kw-{agent.name}", 8)

    def pod(name: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "metadata": {"name": name, "annotations": {"gpualloc.io/bid": "5"}},
            "spec": {
                "schedulerName": "gpu-allocator",
                "containers": [
                    {"name": "m", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            },
        }
        if "node" in extra:
            body["spec"]["nodeName"] = extra["node"]
        if "wallet" in extra:
            body["metadata"]["annotations"]["gpualloc.io/wallet"] = extra["wallet"]
        return body

    vcore.create_namespaced_pod("team1", pod("honest"))
    vcore.create_namespaced_pod("team1", pod("squatter", node=node))
    vcore.create_namespaced_pod("team1", pod("thief", wallet="someone-else"))
    host_pods = wait_for(
        "the honest pod on the host",
        lambda: [
            p.metadata.annotations.get("vcluster.loft.sh/object-name")
            for p in CoreV1Api(lab.host_client()).list_namespaced_pod(agent.host_namespace).items
        ],
    )
    for name, field in (("squatter", "spec.nodeName"), ("thief", "gpualloc.io/wallet")):
        denied = wait_for(
            f"a denial event on {name} in the agent's cluster",
            lambda name=name: [
                e for e in _events(agent.client(), "team1", name) if "denied" in e.message
            ],
        )
        assert field in denied[0].message
    time.sleep(1.0)  # a denied create could only land after the events; it must not
    host_pods = [
        p.metadata.annotations.get("vcluster.loft.sh/object-name")
        for p in CoreV1Api(lab.host_client()).list_namespaced_pod(agent.host_namespace).items
    ]
    assert host_pods == ["honest"]


def test_raising_a_bid_in_the_agents_cluster_wins_the_next_round(
    lab: Any, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negotiation through the agent's own API server: outbid in one round, the agent raises
    its pending pod's bid there (SDK ``set_bid``); the syncer carries the new bid to the host
    pod, and the next round gives it the GPU at the rival's price."""
    host = lab.host_client()
    node = kwok_node(host, f"kw-{agent.name}", 1)
    client = AgentClient(api_client=agent.client(), namespace="team1")
    CoreV1Api(agent.client()).create_namespace({"metadata": {"name": "team1"}})
    client.submit("eager", bid=1.0, gpus=1)
    client.submit("rival", bid=3.0, gpus=1)
    host_ns = agent.host_namespace
    wait_for(
        "both pods synced",
        lambda: len(CoreV1Api(host).list_namespaced_pod(host_ns).items) == 2,
    )
    monkeypatch.setattr("allocator.cluster.loop.fetch", limited_fetch({host_ns}, {node}))
    first = run_once(host, options=RoundOptions(round_id=f"r-{agent.name}-1", dry_run=True))
    assert [w.bid_id.endswith("rival-x-team1-x-" + agent.name) for w in first.result.winners] == [
        True
    ]
    assert client.set_bid("eager", 4.0) == 1

    seen: list[Any] = []

    def host_bid() -> bool:
        pods = CoreV1Api(host).list_namespaced_pod(host_ns).items
        eager = [p for p in pods if p.metadata.name.startswith("eager-")]
        seen[:] = [p.metadata.annotations for p in eager]
        return bool(eager) and float(eager[0].metadata.annotations["gpualloc.io/bid"]) == 4.0

    try:
        wait_for("the raised bid on the host pod", host_bid, timeout=30)
    except AssertionError as e:
        virtual = CoreV1Api(agent.client()).read_namespaced_pod("eager", "team1")
        raise AssertionError(f"{e}: host {seen}, agent's {virtual.metadata.annotations}") from None
    second = run_once(host, options=RoundOptions(round_id=f"r-{agent.name}-2"))
    (winner,) = second.result.winners
    assert winner.bid_id.startswith(f"{host_ns}/eager-")
    assert winner.payment == pytest.approx(3.0)
    pod = wait_for(
        "the raised pod Running in the agent's cluster",
        lambda: (
            (p := CoreV1Api(agent.client()).read_namespaced_pod("eager", "team1")).status.phase
            == "Running"
            and p
        ),
    )
    assert float(pod.metadata.annotations["gpualloc.io/price"]) == pytest.approx(3.0)
