"""The agent SDK against the real API server (standing in for an agent's own, which is all the SDK
needs): the pods it creates are exactly the bids the allocator's reader expects, re-pricing,
withdrawing and resizing change them as documented, the market ConfigMap and Events are read
back, and run_agent applies a policy's actions over two rounds the test advances."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api  # noqa: E402

from allocator.agent import (  # noqa: E402
    AgentClient,
    Chain,
    DeadlinePolicy,
    ShrinkWhenOutbid,
    WithdrawAbove,
    WorkloadError,
    WorkloadNotFound,
    run_agent,
)
from allocator.cluster import snapshot  # noqa: E402
from allocator.model import ProblemError  # noqa: E402
from allocator.model.market import (  # noqa: E402
    MARKET_CONFIGMAP,
    MARKET_NAMESPACE,
    MarketView,
    PodOutcome,
    WalletView,
)

pytestmark = pytest.mark.k8s


@pytest.fixture()
def admin(api_client: Callable[[str], Any], control_plane: Any) -> Any:
    return api_client(control_plane.admin_token)


@pytest.fixture()
def namespace(admin: Any) -> str:
    ns = f"agent-{uuid.uuid4().hex[:6]}"
    CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    return ns


@pytest.fixture()
def market_cm(admin: Any) -> Iterator[Callable[[MarketView], None]]:
    """Write the market ConfigMap (create or replace); deleted after the test."""
    core = CoreV1Api(admin)

    def write(view: MarketView) -> None:
        body = {
            "metadata": {"name": MARKET_CONFIGMAP, "namespace": MARKET_NAMESPACE},
            "data": view.to_configmap_data(),
        }
        try:
            core.replace_namespaced_config_map(MARKET_CONFIGMAP, MARKET_NAMESPACE, body)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status != 404:
                raise
            core.create_namespaced_config_map(MARKET_NAMESPACE, body)

    yield write
    try:
        core.delete_namespaced_config_map(MARKET_CONFIGMAP, MARKET_NAMESPACE)
    except kubernetes.client.exceptions.ApiException as e:
        if e.status != 404:
            raise


def _pods(admin: Any, ns: str) -> dict[str, dict[str, Any]]:
    raw = CoreV1Api(admin).list_namespaced_pod(ns, _preload_content=False).data
    return {p["metadata"]["name"]: p for p in json.loads(raw)["items"]}


def _bind(admin: Any, ns: str, pod: str, node: str, gpus: str, price: float) -> None:
    """What the allocator does to a winner: annotate (GPUs, round, price), then bind."""
    core = CoreV1Api(admin)
    annotations = {
        "gpualloc.io/gpus": gpus,
        "gpualloc.io/round": "r-1",
        "gpualloc.io/price": str(price),
    }
    core.patch_namespaced_pod(pod, ns, {"metadata": {"annotations": annotations}})
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    core.create_namespaced_pod_binding(pod, ns, body, _preload_content=False).release_conn()


def test_submit_creates_exactly_the_bids_the_reader_expects(
    admin: Any, namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    """Gang, MIG and share pods are exactly as specified and the reader sees the intended bids."""
    kubeconfig = control_plane.write_kubeconfig(
        tmp_path / "agent.kubeconfig", control_plane.admin_token
    )
    client = AgentClient(kubeconfig, namespace)
    wallet = {"gpualloc.io/wallet": "w"}  # in an agent's cluster the wallet is implied
    gang = client.submit("train", bid=10.0, gpus=2, replicas=3, locality="node", annotations=wallet)
    client.submit("mig", bid=3.0, mig_profile="1g.10gb", gpus=2, annotations=wallet)
    client.submit("share", bid=0.6, milli=300, cpu="500m", memory="2Gi", annotations=wallet)
    assert gang.pods == ("train-0", "train-1", "train-2")

    pods = _pods(admin, namespace)
    assert sorted(pods) == ["mig", "share", "train-0", "train-1", "train-2"]
    train1 = pods["train-1"]
    assert train1["metadata"]["labels"] == {
        "gpualloc.io/workload": "train",
        "gpualloc.io/gang": "train",
    }
    assert train1["metadata"]["annotations"] == {
        "gpualloc.io/wallet": "w",
        "gpualloc.io/bid": "3.333333333333332",
        "gpualloc.io/locality": "node",
        "gpualloc.io/gang-size": "3",
    }
    assert train1["spec"]["schedulerName"] == "gpu-allocator"
    assert "nodeName" not in train1["spec"]
    assert train1["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "2"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    assert (
        sum(
            float(pods[f"train-{i}"]["metadata"]["annotations"]["gpualloc.io/bid"])
            for i in range(3)
        )
        == 10.0
    )
    assert pods["mig"]["metadata"]["labels"] == {"gpualloc.io/workload": "mig"}
    assert pods["mig"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "2"},
        "limits": {"nvidia.com/mig-1g.10gb": "2"},
    }
    assert pods["share"]["metadata"]["annotations"] == {
        "gpualloc.io/wallet": "w",
        "gpualloc.io/bid": "0.6",
        "gpualloc.io/locality": "any",
        "gpualloc.io/gpu-milli": "300",
    }
    assert pods["share"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu.shared": "1"},
        "limits": {"nvidia.com/gpu.shared": "1"},
    }

    # The allocator's reader, fed the pods as the typed client serialises them.
    typed = CoreV1Api(admin).list_namespaced_pod(namespace).items
    as_json = [admin.sanitize_for_serialization(p) for p in typed]
    wallet_obj = {
        "apiVersion": "gpualloc.io/v1alpha1",
        "kind": "Wallet",
        "metadata": {"name": "w", "namespace": namespace},
        "spec": {"balance": 100},
    }
    snap = snapshot([], as_json, [wallet_obj])
    assert snap.skipped == ()
    bids = {b.id: b for b in snap.problem.bids}
    assert set(bids) == {f"{namespace}/gang/train", f"{namespace}/mig", f"{namespace}/share"}
    (train,) = bids[f"{namespace}/gang/train"].alternatives
    assert (train.value, train.replicas, train.unit.kind, train.unit.gpus, train.locality) == (
        10.0,
        3,
        "whole",
        2,
        "node",
    )
    assert bids[f"{namespace}/gang/train"].wallet == f"{namespace}/w"
    assert snap.pods_of_bid[f"{namespace}/gang/train"] == tuple(
        f"{namespace}/train-{i}" for i in range(3)
    )
    (mig,) = bids[f"{namespace}/mig"].alternatives
    assert (mig.value, mig.replicas, mig.unit.gpus) == (3.0, 1, 2)
    assert mig.models and all(m.endswith("-MIG-1g.10gb") for m in mig.models)
    (share,) = bids[f"{namespace}/share"].alternatives
    assert (share.value, share.unit.kind, share.unit.milli, share.cpu_milli, share.memory_mib) == (
        0.6,
        "share",
        300,
        500,
        2048,
    )

    # Bad arguments create nothing; a second workload of the same name is refused.
    with pytest.raises(ValueError, match=r"^locality:"):
        client.submit("bad", bid=1.0, locality="moon")
    with pytest.raises(WorkloadError):
        client.submit("mig", bid=1.0)
    assert sorted(_pods(admin, namespace)) == ["mig", "share", "train-0", "train-1", "train-2"]


def test_set_bid_withdraw_resize(admin: Any, namespace: str, gpu_world: Any) -> None:
    """set_bid, resize and withdraw change the pods as documented and refuse what they must."""
    client = AgentClient(namespace=namespace, api_client=admin)
    client.submit("train", bid=12.0, replicas=3, max_price=20.0)
    client.submit("mig", bid=2.0, mig_profile="3g.40gb")
    client.submit("solo", bid=5.0)
    node = gpu_world.node(admin, 8)

    assert client.set_bid("train", 15.5) == 3
    bids = [
        float(p["metadata"]["annotations"]["gpualloc.io/bid"])
        for _, p in sorted(_pods(admin, namespace).items())
        if p["metadata"]["name"].startswith("train")
    ]
    assert sum(bids) == 15.5
    assert client.status("train").bid == 15.5
    with pytest.raises(ValueError, match=r"^value:"):
        client.set_bid("train", 25.0)
    with pytest.raises(WorkloadNotFound):
        client.set_bid("nothing", 1.0)

    _bind(admin, namespace, "solo", node, "3", 2.5)
    with pytest.raises(WorkloadError, match="no pending pod"):
        client.set_bid("solo", 9.0)
    with pytest.raises(WorkloadError, match="running"):
        client.resize("solo", replicas=1)
    solo = client.status("solo")
    assert (solo.phase, solo.price, solo.nodes, solo.gpus) == (
        "running",
        2.5,
        (node,),
        {"solo": (3,)},
    )

    resized = client.resize("train", replicas=2)
    assert resized.pods == ("train-0", "train-1")
    pods = _pods(admin, namespace)
    assert "train-2" not in pods
    assert (
        sum(
            float(pods[f"train-{i}"]["metadata"]["annotations"]["gpualloc.io/bid"])
            for i in range(2)
        )
        == 15.5
    )
    assert pods["train-0"]["metadata"]["annotations"]["gpualloc.io/max-price"] == "20.0"

    client.resize("mig", mig_profile="1g.10gb", bid=1.5)
    mig = _pods(admin, namespace)["mig"]
    assert mig["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert mig["metadata"]["annotations"]["gpualloc.io/bid"] == "1.5"
    with pytest.raises(ValueError, match=r"^mig_profile:"):
        client.resize("train", mig_profile="1g.10gb")

    assert client.withdraw("mig") == 1
    assert client.status("mig").phase == "gone"
    assert client.withdraw("mig") == 0
    assert sorted(s.name for s in client.workloads()) == ["solo", "train"]


def test_market_wallet_quote_and_outcomes(
    admin: Any, namespace: str, market_cm: Callable[[MarketView], None]
) -> None:
    """The client reads the ConfigMap (or Events); a malformed ConfigMap names the key."""
    client = AgentClient(namespace=namespace, api_client=admin)
    assert client.market() is None and client.round_id() is None
    client.submit("sweep", bid=1.0, mig_profile="1g.10gb")
    client.submit("other", bid=1.0)
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    wallet = WalletView("alice", 50.0, 5.0, "24h", 10, 7.5, 42.5)
    view = MarketView("alice", "r-0", now - timedelta(minutes=5), wallet).with_round(
        "r-1",
        now,
        clearing={"A100-SXM4-80GB-MIG-1g.10gb": 0.9, "H100-80GB": 3.0},
        utilisation={"H100-80GB": 1.0},
        outcomes={
            f"{namespace}/sweep": PodOutcome(
                "r-1", "outbid", 1.0, detail={"density": 7.0, "lowest_winning_density": 9.5}
            )
        },
    )
    market_cm(view)
    assert client.market() == view
    assert client.wallet() == wallet
    assert client.round_id() == "r-1"
    assert client.quote("1g.10gb") == 0.9
    assert client.quote("H100-80GB") == 3.0
    assert client.quote("B200") is None
    sweep = client.status("sweep")
    assert (sweep.phase, sweep.outcome_source) == ("lost-and-pending", "market")
    assert sweep.outcome is not None and sweep.outcome.detail["lowest_winning_density"] == 9.5

    # No ConfigMap entry for "other": the allocator's Event about it says.
    other = _pods(admin, namespace)["other"]
    CoreV1Api(admin).create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "other.outbid"},
            "involvedObject": {
                "kind": "Pod",
                "namespace": namespace,
                "name": "other",
                "uid": other["metadata"]["uid"],
            },
            "reason": "OverBudget",
            "message": "round r-1: over budget (available 0.5)",
            "type": "Warning",
            "source": {"component": "gpu-allocator"},
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        },
    )
    status = client.status("other")
    assert (status.phase, status.outcome_source) == ("lost-and-pending", "event")
    assert status.outcome == PodOutcome(
        "r-1", "over_budget", message="round r-1: over budget (available 0.5)"
    )
    assert {s.name: s.phase for s in client.workloads()} == {
        "other": "lost-and-pending",
        "sweep": "lost-and-pending",
    }

    bad = view.to_configmap_data()
    wallet_json = json.loads(bad["wallet"])
    wallet_json["available"] = "lots"
    bad["wallet"] = json.dumps(wallet_json)
    CoreV1Api(admin).replace_namespaced_config_map(
        MARKET_CONFIGMAP,
        MARKET_NAMESPACE,
        {"metadata": {"name": MARKET_CONFIGMAP}, "data": bad},
    )
    with pytest.raises(ProblemError) as info:
        client.market()
    assert info.value.path == "data.wallet.available"


def test_run_agent_applies_a_policy_over_two_rounds(
    admin: Any, namespace: str, market_cm: Callable[[MarketView], None]
) -> None:
    """run_agent applies a policy's shrink, raise and withdraw over two rounds."""
    client = AgentClient(namespace=namespace, api_client=admin)
    client.submit("trial", bid=1.0, mig_profile="3g.40gb")
    client.submit("eval", bid=4.0, gpus=1, replicas=2, max_price=10.0)
    start = datetime.now(UTC)
    t1 = start.replace(microsecond=0) + timedelta(seconds=1)
    view = MarketView("alice", "r-0", start - timedelta(minutes=1)).with_round(
        "r-1",
        t1,
        clearing={"A100-SXM4-80GB-MIG-3g.40gb": 0.5},
        outcomes={f"{namespace}/trial": PodOutcome("r-1", "outbid", 1.0)},
    )
    market_cm(view)
    policy = Chain(
        [
            WithdrawAbove(2.0, workloads=["trial"]),
            ShrinkWhenOutbid(profiles=["3g.40gb", "2g.20gb", "1g.10gb"], workloads=["trial"]),
            DeadlinePolicy(
                10.0,
                start + timedelta(hours=1),
                0.5,
                start=start - timedelta(hours=1),
                workloads=["eval"],
            ),
        ]
    )
    first_done = threading.Event()
    result: dict[str, Any] = {}

    def agent() -> None:
        try:
            result["logs"] = run_agent(
                client,
                policy,
                rounds=2,
                timeout=60,
                poll=0.1,
                on_round=lambda _: first_done.set(),
            )
        except BaseException as e:  # reported by the test thread
            result["error"] = e

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    assert first_done.wait(60), "run_agent did not act on round r-1"
    pods = _pods(admin, namespace)
    assert pods["trial"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/mig-2g.20gb": "1"
    }
    eval_bid = sum(
        float(pods[f"eval-{i}"]["metadata"]["annotations"]["gpualloc.io/bid"]) for i in range(2)
    )
    assert (
        7.5 <= eval_bid <= 7.6
    )  # half-way from start - 1 h to start + 1 h: 10 x (0.5 + 0.5 x 0.5)

    market_cm(
        view.with_round(
            "r-2",
            t1 + timedelta(seconds=1),
            clearing={"A100-SXM4-80GB-MIG-2g.20gb": 2.5},
        )
    )
    thread.join(60)
    assert not thread.is_alive(), "run_agent did not stop after two rounds"
    assert "error" not in result, result.get("error")
    logs = result["logs"]
    assert [r.round_id for r in logs] == ["r-1", "r-2"]
    assert logs[0].errors == () and logs[1].errors == ()
    assert logs[0].applied[0] == "shrink trial to MIG 2g.20gb (outbid: 2g.20gb): now 1 pod(s)"
    assert logs[0].applied[1].startswith("raise bid of eval to 7.5")
    assert logs[1].applied[0] == "withdraw trial (clearing 2.5 > value 2): 1 pod(s) deleted"
    assert client.status("trial").phase == "gone"
    assert client.status("eval").phase == "pending"


def test_inference_example_scales_up_in_a_spike(
    admin: Any,
    namespace: str,
    control_plane: Any,
    market_cm: Callable[[MarketView], None],
    tmp_path: Path,
) -> None:
    """The inference example program adds replicas after a load spike, printing each round."""
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "k", control_plane.admin_token)
    load = tmp_path / "load"
    load.write_text("20\n")
    now = datetime.now(UTC).replace(microsecond=0)
    view = MarketView("alice", "r-0", now).with_round("r-1", now + timedelta(seconds=1))
    market_cm(view)
    example = Path(__file__).resolve().parents[2] / "examples" / "agents" / "inference.py"
    argv = [sys.executable, str(example), "--kubeconfig", str(kubeconfig)]
    argv += ["--namespace", namespace, "--rounds", "2", "--poll", "0.1", "--timeout", "60"]
    argv += ["--name", "svc", "--service-rate", "50", "--target-ms", "100"]
    argv += ["--load-file", str(load)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines == [
            "round r-1:\n",
            "  submit svc-r0: 1 x 1 GPU, bid 32 (load 20/s needs 1 replica(s), 0 live): "
            "1 pod(s) created\n",
        ], lines
        load.write_text("150\n")
        market_cm(view.with_round("r-2", now + timedelta(seconds=2)))
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    assert rest.splitlines()[0] == "round r-2:"
    assert sorted(_pods(admin, namespace)) == ["svc-r0", "svc-r1", "svc-r2", "svc-r3"]
    assert "submit svc-r3: 1 x 1 GPU, bid 32" in rest
