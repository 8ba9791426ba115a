"""The Kubernetes reader on API JSON: quantities, nodes, bids, gangs, incumbents, skips."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from allocator import solve, verify
from allocator.cluster import ClusterConfig, Skipped, parse_quantity, snapshot
from allocator.cluster.plan import plan_round
from allocator.cluster.read import go_duration


def _node(name: str, gpus: int, product: str = "A100-SXM4-80GB", **labels: str) -> dict[str, Any]:
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, **labels}},
        "status": {"allocatable": alloc},
    }


def _pod(
    name: str,
    requests: dict[str, str],
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    scheduler: str = "gpu-allocator",
    namespace: str = "team-a",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "main", "resources": {"requests": requests}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


WALLET = {"metadata": {"name": "w", "namespace": "team-a"}, "spec": {"balance": 100}}


def test_quantities() -> None:
    """CPU, memory and plain counts parse as Kubernetes writes them."""
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("2") == 2
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("1.5Ki") == 1536
    assert parse_quantity(" 250m ") == Decimal("0.25")
    assert parse_quantity("1e3m") == 1
    with pytest.raises(ValueError, match="suffix"):
        parse_quantity("3Zz")
    # What the client's parser would take but the API server refuses.
    for bad in ("1K", "1ki", "5 Gi", "NaN", "Infinity", "1_000", "1.2.3", ""):
        with pytest.raises(ValueError, match="quantity"):
            parse_quantity(bad)


def test_pending_pods_become_bids_and_running_ones_incumbents() -> None:
    """Whole-GPU and share pods bid; a gang is one bid; a running pod holds its GPUs; the
    Problem solves and the result passes verify."""
    nodes = [
        _node("n1", 4),
        _node("n2", 2, "T4", **{"nvidia.com/gpu.sharing-strategy": "time-slicing"}),
    ]
    bid = {"gpualloc.io/bid": "10", "gpualloc.io/wallet": "w"}
    pods = [
        _pod("a", {"nvidia.com/gpu": "2", "cpu": "4", "memory": "8Gi"}, bid),
        _pod(
            "s", {"nvidia.com/gpu.shared": "1", "cpu": "1"}, {**bid, "gpualloc.io/gpu-milli": "300"}
        ),
        _pod("g0", {"nvidia.com/gpu": "1"}, bid, {"gpualloc.io/gang": "job"}),
        _pod("g1", {"nvidia.com/gpu": "1"}, bid, {"gpualloc.io/gang": "job"}),
        _pod("r", {"nvidia.com/gpu": "1", "cpu": "2"}, {"gpualloc.io/bid": "5"}, node="n1"),
        _pod("other", {"nvidia.com/gpu": "1"}, node="n1", scheduler="default-scheduler"),
        _pod("web", {"cpu": "10"}, node="n1", scheduler="default-scheduler"),
    ]
    snap = snapshot(nodes, pods, [WALLET], round_id="r1")
    p = snap.problem
    assert snap.skipped == ()
    assert sorted(b.id for b in p.bids) == ["team-a/a", "team-a/gang/job", "team-a/s"]
    gang = next(b for b in p.bids if b.id == "team-a/gang/job")
    assert gang.alternatives[0].replicas == 2 and gang.alternatives[0].value == 20
    assert snap.pods_of_bid["team-a/gang/job"] == ("team-a/g0", "team-a/g1")
    n1 = next(n for n in p.nodes if n.name == "n1")
    assert n1.cpu_milli == 64000 - 10000  # the CPU-only pod of another scheduler
    incs = {i.id: i for i in p.incumbents}
    assert incs["team-a/r"].preemptible and incs["team-a/r"].placements[0].gpus == (0,)
    assert not incs["team-a/other"].preemptible and incs["team-a/other"].placements[0].gpus == (1,)
    assert next(n for n in p.nodes if n.name == "n2").gpus[0].mode == "shared"
    result = solve(p, solver="greedy")
    assert verify(p, result) == []
    # Two GPUs are left on n1: the gang (worth 20) beats the 2-GPU pod (worth 10).
    assert {w.bid_id for w in result.winners} == {"team-a/gang/job", "team-a/s"}


@pytest.mark.parametrize(
    ("annotations", "requests", "field"),
    [
        (
            {"gpualloc.io/bid": "lots", "gpualloc.io/wallet": "w"},
            {"nvidia.com/gpu": "1"},
            "metadata.annotations[gpualloc.io/bid]",
        ),
        (
            {"gpualloc.io/wallet": "w"},
            {"nvidia.com/gpu": "1"},
            "metadata.annotations[gpualloc.io/bid]",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "nope"},
            {"nvidia.com/gpu": "1"},
            "metadata.annotations[gpualloc.io/wallet]",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"},
            {"nvidia.com/gpu.shared": "1"},
            "metadata.annotations[gpualloc.io/gpu-milli]",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w", "gpualloc.io/locality": "moon"},
            {"nvidia.com/gpu": "1"},
            "metadata.annotations[gpualloc.io/locality]",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"},
            {"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"},
            "spec.containers[].resources",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"},
            {"nvidia.com/mig-1g.10gb": "1500m"},
            "spec.containers[].resources.nvidia.com/mig-1g.10gb",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"},
            {"nvidia.com/mig-5g.99gb": "1"},
            "spec.containers[].resources.nvidia.com/mig-5g.99gb",
        ),
        (
            {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"},
            {"nvidia.com/mig-big": "1"},
            "spec.containers[].resources.nvidia.com/mig-big",
        ),
    ],
)
def test_malformed_pod_is_skipped_naming_the_field(
    annotations: dict[str, str], requests: dict[str, str], field: str
) -> None:
    """A bad pod is left out with the field and reason; the rest of the round still reads."""
    good = _pod(
        "good", {"nvidia.com/gpu": "1"}, {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"}
    )
    snap = snapshot([_node("n1", 2)], [good, _pod("bad", requests, annotations)], [WALLET])
    assert [b.id for b in snap.problem.bids] == ["team-a/good"]
    assert [(s.name, s.field) for s in snap.skipped] == [("team-a/bad", field)]


@pytest.mark.parametrize(
    ("annotations", "field"),
    [
        ({"gpualloc.io/bid": "lots"}, "metadata.annotations[gpualloc.io/bid]"),
        (
            {"gpualloc.io/preemption-cost": "-1"},
            "metadata.annotations[gpualloc.io/preemption-cost]",
        ),
        ({"gpualloc.io/gpus": "7,9"}, "metadata.annotations[gpualloc.io/gpus]"),
    ],
)
def test_malformed_running_pod_still_holds_its_gpus(
    annotations: dict[str, str], field: str
) -> None:
    """A running pod with a bad annotation is reported, but kept as a non-preemptible incumbent
    on its GPUs (lowest free ones when its GPU annotation is bad): left out, they would look
    free and a new pod bound there would be refused by the kubelet."""
    running = _pod("old", {"nvidia.com/gpu": "2"}, annotations, node="n1")
    new = _pod("new", {"nvidia.com/gpu": "2"}, {"gpualloc.io/bid": "50", "gpualloc.io/wallet": "w"})
    snap = snapshot([_node("n1", 2)], [running, new], [WALLET])
    assert [(s.name, s.field) for s in snap.skipped] == [("team-a/old", field)]
    assert snap.skipped[0].kept
    (inc,) = snap.problem.incumbents
    assert inc.id == "team-a/old" and not inc.preemptible and inc.value == 0
    assert inc.placements[0].gpus == (0, 1)
    result = solve(snap.problem, solver="greedy")
    assert result.winners == () and result.evicted == ()  # nothing is free, nothing evictable
    assert verify(snap.problem, result) == []
    (notice,) = [n for n in plan_round(snap, result).notices if n.name == "team-a/old"]
    assert notice.reason == "Malformed" and notice.warning
    assert f"kept as running, not preemptible, despite: {field}" in notice.message


def test_config_rejects_unknown_and_empty_settings() -> None:
    """Settings are validated with the field named."""
    with pytest.raises(ValueError, match="rack_labl"):
        ClusterConfig.from_dict({"rack_labl": "x"})
    with pytest.raises(ValueError, match="scheduler_name"):
        ClusterConfig(scheduler_name=" ")


@pytest.mark.parametrize(
    ("wallet", "field", "reason"),
    [
        ({"spec": {}}, "spec.balance", "missing"),
        ({"spec": {"balance": "lots"}}, "spec.balance", "not a number: 'lots'"),
        ({"spec": {"balance": True}}, "spec.balance", "not a number: True"),
        ({"spec": {"balance": -5}}, "spec.balance", "must be finite and >= 0, got -5"),
        ({"spec": {"balance": 9}, "status": {"spent": "x"}}, "status.spent", "not a number: 'x'"),
    ],
)
def test_malformed_wallet_is_skipped_naming_the_field(
    wallet: dict[str, Any], field: str, reason: str
) -> None:
    """A Wallet the CRD's schema would refuse (one stored before it) is left out with the field,
    the reason and its uid; a bid naming it is skipped too, and others still read."""
    bad = {"metadata": {"name": "bad", "namespace": "team-a", "uid": "u-1"}, **wallet}
    pods = [
        _pod("p", {"nvidia.com/gpu": "1"}, {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "w"}),
        _pod("q", {"nvidia.com/gpu": "1"}, {"gpualloc.io/bid": "1", "gpualloc.io/wallet": "bad"}),
    ]
    snap = snapshot([_node("n1", 2)], pods, [WALLET, bad])
    assert [w.name for w in snap.problem.wallets] == ["team-a/w"]
    assert [b.id for b in snap.problem.bids] == ["team-a/p"]
    assert snap.skipped[0] == Skipped("Wallet", "team-a/bad", field, reason, "u-1")
    assert (snap.skipped[1].name, snap.skipped[1].field) == (
        "team-a/q",
        "metadata.annotations[gpualloc.io/wallet]",
    )


def _wallet(name: str, spec: dict[str, Any], created: str | None, spent: float = 0.0) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if created:
        meta["creationTimestamp"] = created
    return {"metadata": meta, "spec": spec, "status": {"spent": spent}}


def test_wallet_income_is_added_for_every_period_started() -> None:
    """Available = balance + income x periods started since creation - spent (never < 0)."""
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    created = "2026-11-28T00:00:00Z"  # 2.5 days before
    spec = {"balance": 100, "incomePerPeriod": 10, "period": "24h"}
    cases = [
        (_wallet("daily", spec, created, spent=30), 100 + 2 * 10 - 30),
        (_wallet("half-daily", {**spec, "period": "12h"}, created, spent=30), 100 + 5 * 10 - 30),
        (_wallet("no-time", spec, None, spent=30), 100 - 30),
        (_wallet("broke", {**spec, "incomePerPeriod": 0}, created, spent=130), 0),
    ]
    snap = snapshot([_node("n1", 1)], [], [w for w, _ in cases], now=now)
    assert snap.skipped == ()
    got = {w.name: w.balance for w in snap.problem.wallets}
    assert got == {f"team-a/{w['metadata']['name']}": v for w, v in cases}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"balance": 1, "incomePerPeriod": 1, "period": "1d"}, "spec.period"),
        ({"balance": 1, "incomePerPeriod": 1, "period": "0s"}, "spec.period"),
        ({"balance": 1, "incomePerPeriod": "x"}, "spec.incomePerPeriod"),
        ({"balance": 1, "priority": "high"}, "spec.priority"),
    ],
)
def test_malformed_wallet_funding_names_the_field(spec: dict[str, Any], field: str) -> None:
    snap = snapshot([_node("n1", 1)], [], [_wallet("w", spec, "2026-11-28T00:00:00Z")])
    assert [(s.name, s.field) for s in snap.skipped] == [("team-a/w", field)]


def test_go_durations() -> None:
    assert go_duration("24h", "p") == 86400
    assert go_duration("1h30m", "p") == go_duration("1.5h", "p") == 5400
    assert go_duration("90s", "p") == 90 and go_duration("500ms", "p") == 0.5
    for bad in ("", "h", "1d", "1h 30m", "-1h", 24):
        with pytest.raises(ValueError, match=r"^p: "):
            go_duration(bad, "p")


def test_wallet_priority_breaks_ties() -> None:
    """Two equal bids for the one GPU: the bid from the Wallet of higher priority wins, whatever
    the names' order."""
    wallets = [
        _wallet("low", {"balance": 10, "priority": 0}, None),
        _wallet("high", {"balance": 10, "priority": 5}, None),
    ]
    pods = [
        _pod("a", {"nvidia.com/gpu": "1"}, {"gpualloc.io/bid": "3", "gpualloc.io/wallet": "low"}),
        _pod("b", {"nvidia.com/gpu": "1"}, {"gpualloc.io/bid": "3", "gpualloc.io/wallet": "high"}),
    ]
    snap = snapshot([_node("n1", 1)], pods, wallets)
    assert [b.id for b in snap.problem.bids] == ["team-a/b", "team-a/a"]
    result = solve(snap.problem, solver="greedy")
    assert [w.bid_id for w in result.winners] == ["team-a/b"]
