"""Agents' pods on the host (synced by vcluster): their wallet, gang keys, names as the agent
knows them, and each agent's view of the round (outcomes, wallet after charges, prices)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from allocator import solve
from allocator.cluster import snapshot
from allocator.cluster.market import agent_outcomes, agent_views
from allocator.cluster.plan import plan_round
from allocator.model.market import MarketView

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _node(name: str, gpus: int) -> dict[str, Any]:
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "H100-80GB"}},
        "status": {"allocatable": alloc},
    }


def _synced_pod(
    agent: str,
    virtual_ns: str,
    name: str,
    gpus: int,
    bid: str,
    *,
    wallet: str | None = None,
    gang: str | None = None,
) -> dict[str, Any]:
    """A pod as vcluster's syncer writes it into the agent's host namespace."""
    annotations = {
        "gpualloc.io/bid": bid,
        "vcluster.loft.sh/object-name": name,
        "vcluster.loft.sh/object-namespace": virtual_ns,
    }
    if wallet is not None:
        annotations["gpualloc.io/wallet"] = wallet
    labels = {"gpualloc.io/gang": gang} if gang else {}
    return {
        "metadata": {
            "name": f"{name}-x-{virtual_ns}-x-{agent}",
            "namespace": f"vc-{agent}",
            "uid": f"uid-{agent}-{virtual_ns}-{name}",
            "annotations": annotations,
            "labels": labels,
        },
        "spec": {
            "schedulerName": "gpu-allocator",
            "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": "Pending"},
    }


def _agent_wallet(agent: str, balance: float, priority: int = 0) -> dict[str, Any]:
    return {
        "metadata": {
            "name": agent,
            "namespace": f"vc-{agent}",
            "labels": {"gpualloc.io/agent": agent},
            "creationTimestamp": "2026-12-07T00:00:00Z",
        },
        "spec": {"balance": balance, "priority": priority},
        "status": {"spent": 1.0},
    }


def test_an_agents_pods_pay_from_its_wallet_without_naming_it() -> None:
    """A synced pod with no wallet annotation bids from its agent's Wallet, as its agent."""
    snap = snapshot(
        [_node("n1", 8)],
        [_synced_pod("alice", "team1", "p0", 1, "5")],
        [_agent_wallet("alice", 50)],
        now=NOW,
    )
    (bid,) = snap.problem.bids
    assert bid.wallet == "vc-alice/alice"
    assert bid.bidder == "alice"
    assert snap.display_name("vc-alice/p0-x-team1-x-alice") == "agent alice: team1/p0"
    assert snap.agents == {"vc-alice": "alice"}
    assert snap.agent_wallets["alice"].available == 49.0


def test_naming_another_agents_wallet_is_refused_with_the_field() -> None:
    """A pod of alice naming bob's wallet is left out, with the annotation named and a Skipped
    event that names the pod as alice knows it; naming its own wallet is fine."""
    pods = [
        _synced_pod("alice", "team1", "thief", 1, "5", wallet="bob"),
        _synced_pod("alice", "team1", "honest", 1, "5", wallet="alice"),
    ]
    snap = snapshot(
        [_node("n1", 8)], pods, [_agent_wallet("alice", 50), _agent_wallet("bob", 50)], now=NOW
    )
    assert [b.id for b in snap.problem.bids] == ["vc-alice/honest-x-team1-x-alice"]
    (skip,) = snap.skipped
    assert skip.field == "metadata.annotations[gpualloc.io/wallet]"
    assert "'bob'" in skip.reason and "agent alice" in skip.reason
    result = solve(snap.problem, solver="greedy")
    plan = plan_round(snap, result)
    (event,) = [n for n in plan.notices if n.reason == "Skipped"]
    assert "agent alice: team1/thief" in event.message
    assert event.uid == "uid-alice-team1-thief"


def test_a_wallet_labelled_for_another_name_makes_no_agent() -> None:
    """Only a Wallet named after the agent in its label marks the namespace as the agent's."""
    wallet = _agent_wallet("alice", 50)
    wallet["metadata"]["labels"]["gpualloc.io/agent"] = "mallory"
    snap = snapshot([_node("n1", 8)], [_synced_pod("alice", "t", "p", 1, "5")], [wallet], now=NOW)
    assert snap.agents == {}
    assert snap.problem.bids == ()
    assert snap.skipped[0].field == "metadata.annotations[gpualloc.io/wallet]"


def test_gangs_of_two_virtual_namespaces_stay_apart() -> None:
    """Gang 'job' in team1 and gang 'job' in team2 of one agent are two bids of 2 replicas."""
    pods = [
        _synced_pod("alice", ns, f"w{i}", 1, "3", gang="job")
        for ns in ("team1", "team2")
        for i in range(2)
    ]
    snap = snapshot([_node("n1", 8)], pods, [_agent_wallet("alice", 50)], now=NOW)
    ids = sorted(b.id for b in snap.problem.bids)
    assert ids == ["vc-alice/gang/team1/job", "vc-alice/gang/team2/job"]
    assert all(b.alternatives[0].replicas == 2 for b in snap.problem.bids)


def test_each_agent_sees_its_own_outcomes_wallet_and_the_prices() -> None:
    """Two agents compete for 2 GPUs: the views hold each agent's pods only (named as it knows
    them), the winner's payment and node, the loser's reason with numbers, the wallet after the
    round's charges, and the round's clearing prices appended to the previous history."""
    pods = [
        _synced_pod("alice", "prod", "serve", 2, "30"),
        _synced_pod("bob", "lab", "train", 2, "10"),
    ]
    wallets = [_agent_wallet("alice", 100, priority=5), _agent_wallet("bob", 100)]
    snap = snapshot([_node("n1", 2)], pods, wallets, round_id="r-1", now=NOW)
    result = solve(snap.problem, solver="greedy", payments="critical")
    plan = plan_round(snap, result)
    outcomes = agent_outcomes(snap, result, plan)
    assert set(outcomes) == {"alice", "bob"}
    won = outcomes["alice"]["prod/serve"]
    assert won.outcome == "won" and won.node == "n1" and won.gpus == (0, 1)
    assert won.payment is not None and 0 < won.payment <= 30
    lost = outcomes["bob"]["lab/train"]
    assert lost.outcome == "outbid" and lost.bid == 10.0 and lost.detail
    assert set(outcomes["bob"]) == {"lab/train"}  # nothing of alice's

    earlier = MarketView(agent="alice", round_id="r-0", updated=NOW).with_round(
        "r-0", NOW, clearing={"H100-80GB": 1.0}
    )
    views = agent_views(snap, result, plan, {"alice": earlier, "bob": None}, NOW)
    alice = views["alice"]
    assert [p.round_id for p in alice.prices] == ["r-0", "r-1"]
    assert alice.prices[-1].clearing == dict(result.clearing_prices)
    assert alice.wallet is not None
    assert alice.wallet.spent == 1.0 + won.payment  # one pod of 2 GPUs
    assert alice.wallet.available == 100 - 1.0 - won.payment
    assert views["bob"].wallet is not None and views["bob"].wallet.spent == 1.0
    back = MarketView.from_configmap_data(alice.to_configmap_data())
    assert back.outcomes["prod/serve"].payment == won.payment
