"""Tests of the agent SDK's pure parts, with no API server: workload specs and their pods, bid
splitting, workload status from pods/Events/the market, the negotiation policies, and the example
agents' decisions (and that each example program answers --help)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.agent import (
    Chain,
    DeadlinePolicy,
    Keep,
    RaiseBid,
    RoundView,
    Shrink,
    ShrinkWhenOutbid,
    Submit,
    Withdraw,
    WithdrawAbove,
    WorkloadSpec,
    describe_action,
    spec_from_pods,
    split_bid,
    workload_statuses,
)
from allocator.agent.status import gone_status
from allocator.model.market import MarketView, PodOutcome, PriceRecord, WalletView

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "agents"
T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
NS = "team"


# --- specs and pods -------------------------------------------------------------------------


def test_gang_pods_exactly() -> None:
    """A 3-replica workload is a gang name-0..2 with exactly the SDK's labels and requests."""
    spec = WorkloadSpec("train", bid=12.0, gpus=2, replicas=3, locality="node", max_price=20.0)
    pods = spec.pods()
    assert [p["metadata"]["name"] for p in pods] == ["train-0", "train-1", "train-2"]
    assert pods[1] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train-1",
            "labels": {"gpualloc.io/workload": "train", "gpualloc.io/gang": "train"},
            "annotations": {
                "gpualloc.io/bid": "4.0",
                "gpualloc.io/locality": "node",
                "gpualloc.io/gang-size": "3",
                "gpualloc.io/max-price": "20.0",
            },
        },
        "spec": {
            "schedulerName": "gpu-allocator",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "2"},
                        "limits": {"nvidia.com/gpu": "2"},
                    },
                }
            ],
        },
    }


def test_mig_and_share_pods() -> None:
    """MIG pods request nvidia.com/mig-<profile>; shares the share resource and gpu-milli."""
    (mig,) = WorkloadSpec("m", bid=1.0, mig_profile="1g.10gb+me").pods()
    assert mig["metadata"]["name"] == "m"
    assert mig["metadata"]["labels"] == {"gpualloc.io/workload": "m"}
    assert mig["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb.me": "1"}
    (share,) = WorkloadSpec("s", bid=0.3, milli=300, share_resource="x.io/shared").pods()
    assert share["metadata"]["annotations"]["gpualloc.io/gpu-milli"] == "300"
    assert share["spec"]["containers"][0]["resources"]["requests"]["x.io/shared"] == "1"
    assert WorkloadSpec("s", bid=1, milli=500, replicas=4).gpu_equivalents == 2.0
    assert WorkloadSpec("m", bid=1, mig_profile="3g.40gb", replicas=7).gpu_equivalents == 3.0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "x" * 62, "replicas": 20}, "name"),
        ({"bid": -1}, "bid"),
        ({"bid": math.nan}, "bid"),
        ({"bid": "5"}, "bid"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": True}, "gpus"),
        ({"milli": 1000}, "milli"),
        ({"milli": 300, "gpus": 1}, "milli"),
        ({"mig_profile": "big"}, "mig_profile"),
        ({"replicas": 0}, "replicas"),
        ({"locality": "planet"}, "locality"),
        ({"cpu": "lots"}, "cpu"),
        ({"memory": "1 GB"}, "memory"),
        ({"image": ""}, "image"),
        ({"max_price": 1.0, "bid": 2.0}, "max_price"),
        ({"labels": {"gpualloc.io/gang": "x"}}, "labels"),
        ({"annotations": {"gpualloc.io/bid": "9"}}, "annotations"),
        ({"annotations": {"a": 1}}, "annotations"),
        ({"command": "sleep 1"}, "command"),
    ],
)
def test_spec_validation_names_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    """Each invalid argument raises ValueError whose message starts with its name."""
    args: dict[str, Any] = {"name": "w", "bid": 1.0, **kwargs}
    with pytest.raises(ValueError) as info:
        WorkloadSpec(**args)
    assert str(info.value).startswith(f"{argument}:"), info.value


def test_spec_from_pods_round_trip() -> None:
    """The spec read back from a workload's pods is the spec that made them."""
    for spec in (
        WorkloadSpec(
            "a",
            bid=10.0,
            gpus=2,
            replicas=3,
            locality="rack",
            cpu="500m",
            memory="2Gi",
            image="img:1",
            max_price=15.0,
            command=("python", "eval.py"),
            labels={"team": "x"},
            annotations={"gpualloc.io/wallet": "w", "note": "n"},
        ),
        WorkloadSpec("b", bid=0.7, mig_profile="2g.20gb", gpus=2),
        WorkloadSpec("c", bid=0.3, milli=250),
    ):
        pods = spec.pods()
        pods[0]["metadata"]["annotations"]["gpualloc.io/price"] = "1"
        assert spec_from_pods(pods) == spec


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(1, 64),
)
def test_split_bid_adds_up_exactly(total: float, n: int) -> None:
    """Per-pod bids are >= 0 and add up to exactly the total in any order of addition."""
    names = [f"p-{i}" for i in range(n)]
    parts = split_bid(total, sorted(names))
    values = [float(parts[p]) for p in sorted(names)]
    assert all(v >= 0 for v in values)
    running = 0.0
    for v in values:
        running += v
    assert running == total
    assert sum(reversed(values)) == total
    assert math.fsum(values) == total
    assert max(values) - min(values) <= max(total, 1) * 1e-12 * n


# --- status ---------------------------------------------------------------------------------


def _pods(spec: WorkloadSpec, created: datetime = T0, **bound: Any) -> list[dict[str, Any]]:
    """The pods of ``spec`` as the API server returns them; ``bound``: node, gpus, price."""
    pods = spec.pods()
    for i, p in enumerate(pods):
        p["metadata"].update(
            namespace=NS, uid=f"uid-{p['metadata']['name']}", creationTimestamp=_ts(created)
        )
        p["status"] = {"phase": "Pending"}
        if bound:
            p["spec"]["nodeName"] = bound["node"]
            p["metadata"]["annotations"].update(
                {
                    "gpualloc.io/gpus": str(i),
                    "gpualloc.io/round": "r-1",
                    "gpualloc.io/price": str(bound["price"]),
                }
            )
    return pods


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _market(round_id: str = "r-1", **outcomes: PodOutcome) -> MarketView:
    return MarketView(
        "alice",
        round_id,
        T0 + timedelta(minutes=1),
        WalletView("alice", 10.0, 0.0, None, 0, 0.0, 10.0),
        (PriceRecord(round_id, T0 + timedelta(minutes=1), {"H100-80GB": 3.0}),),
        {f"{NS}/{k.replace('_', '-')}": v for k, v in outcomes.items()},
    )


def test_status_phases_price_and_outcome() -> None:
    """Pods and the market give each phase, the price paid, nodes, GPUs and outcome."""
    waiting = _pods(WorkloadSpec("wait", bid=2.0))
    running = _pods(WorkloadSpec("run", bid=6.0, replicas=2), node="n1", price=1.5)
    lost = _pods(WorkloadSpec("lost", bid=1.0))
    evicted = _pods(WorkloadSpec("ev", bid=1.0), node="n1", price=1.0)
    evicted[0]["metadata"]["deletionTimestamp"] = _ts(T0)
    market = _market(lost=PodOutcome("r-1", "outbid", 1.0, detail={"density": 0.5}))
    by_name = {
        s.name: s
        for s in workload_statuses(waiting + running + lost + evicted, namespace=NS, market=market)
    }
    assert {n: s.phase for n, s in by_name.items()} == {
        "wait": "pending",
        "run": "running",
        "lost": "lost-and-pending",
        "ev": "gone",
    }
    run = by_name["run"]
    assert (run.price, run.nodes, run.gpus, run.bid) == (
        3.0,
        ("n1",),
        {"run-0": (0,), "run-1": (1,)},
        None,
    )
    assert by_name["wait"].bid == 2.0
    lost_status = by_name["lost"]
    assert lost_status.outcome_source == "market"
    assert lost_status.outcome is not None and lost_status.outcome.detail == {"density": 0.5}
    assert lost_status.spec == WorkloadSpec("lost", bid=1.0)


def test_status_falls_back_to_events_and_ignores_stale_news() -> None:
    """Without a market entry the newest Event is the outcome; news older than the pod is not."""
    pods = _pods(WorkloadSpec("w", bid=2.0), created=T0 + timedelta(minutes=5))
    old_event = {
        "involvedObject": {"kind": "Pod", "name": "w", "uid": "uid-old"},
        "reason": "Won",
        "message": "round r-0: bid 2, pays 1 (1 for this pod), on n GPUs [0]",
        "lastTimestamp": _ts(T0),
    }
    stale_market = _market(w=PodOutcome("r-1", "outbid", 2.0))  # round r-1 ran at T0 + 1 min
    (status,) = workload_statuses(pods, namespace=NS, market=stale_market, events=[old_event])
    assert (status.phase, status.outcome) == ("pending", None)
    new_event = {
        "involvedObject": {"kind": "Pod", "name": "w", "uid": "uid-w"},
        "reason": "OverBudget",
        "message": "round r-2: over budget (balance 1)",
        "lastTimestamp": _ts(T0 + timedelta(minutes=6)),
    }
    (status,) = workload_statuses(pods, namespace=NS, events=[old_event, new_event])
    assert status.phase == "lost-and-pending"
    assert status.outcome_source == "event"
    assert status.outcome == PodOutcome(
        "r-2", "over_budget", message="round r-2: over budget (balance 1)"
    )
    won = {**new_event, "reason": "Won", "message": old_event["message"].replace("r-0", "r-3")}
    (status,) = workload_statuses(pods, namespace=NS, events=[won])
    assert status.outcome is not None
    assert (status.outcome.outcome, status.outcome.payment) == ("won", 1.0)


def test_gone_status_reads_the_market() -> None:
    """A workload with no pods is gone, with the ConfigMap outcome of a pod that was its."""
    market = _market(w_1=PodOutcome("r-1", "won", 1.0, 0.5, "n", (0,)))
    status = gone_status("w", namespace=NS, market=market)
    assert status.phase == "gone"
    assert status.outcome is not None and status.outcome.payment == 0.5
    assert gone_status("other", namespace=NS, market=market).outcome is None


# --- policies -------------------------------------------------------------------------------


def _view(
    *pod_lists: list[dict[str, Any]], market: MarketView | None = None, now: datetime = T0
) -> RoundView:
    pods = [p for pods in pod_lists for p in pods]
    statuses = workload_statuses(pods, namespace=NS, market=market)
    round_id = market.round_id if market else "r-1"
    return RoundView(round_id, now, tuple(statuses), market, market.wallet if market else None)


def test_deadline_policy_raises_linearly_and_never_lowers() -> None:
    """DeadlinePolicy follows its curve to the value, capped at max_price, never lowering."""
    policy = DeadlinePolicy(10.0, T0 + timedelta(hours=1), 0.5, start=T0)
    assert policy.bid_at(T0 + timedelta(minutes=30), T0) == pytest.approx(7.5)
    assert policy.bid_at(T0 + timedelta(hours=2), T0) == 10.0
    quad = DeadlinePolicy(10.0, T0 + timedelta(hours=1), 0.5, curve="quadratic", start=T0)
    assert quad.bid_at(T0 + timedelta(minutes=30), T0) == pytest.approx(6.25)
    pods = _pods(WorkloadSpec("e", bid=5.0))
    (a,) = policy.decide(_view(pods, now=T0 + timedelta(minutes=30)))
    assert isinstance(a, RaiseBid) and (a.name, a.value) == ("e", pytest.approx(7.5))
    high = _pods(WorkloadSpec("e", bid=9.0))
    (k,) = policy.decide(_view(high, now=T0 + timedelta(minutes=30)))
    assert isinstance(k, Keep)
    capped = _pods(WorkloadSpec("e", bid=5.0, max_price=6.0))
    (c,) = policy.decide(_view(capped, now=T0 + timedelta(minutes=50)))
    assert isinstance(c, RaiseBid) and c.value == 6.0
    running = _pods(WorkloadSpec("e", bid=5.0), node="n", price=1)
    assert policy.decide(_view(running, now=T0 + timedelta(minutes=50))) == []
    with pytest.raises(ValueError, match="start_fraction"):
        DeadlinePolicy(1.0, T0, 2.0)


def test_deadline_policy_starts_when_it_first_sees_a_workload() -> None:
    """Without a start, progress counts from the round the policy first saw the workload."""
    policy = DeadlinePolicy(10.0, T0 + timedelta(hours=2), 0.5)
    pods = _pods(WorkloadSpec("e", bid=1.0))
    (first,) = policy.decide(_view(pods, now=T0 + timedelta(hours=1)))
    assert isinstance(first, RaiseBid) and first.value == 5.0
    (later,) = policy.decide(_view(pods, now=T0 + timedelta(hours=1, minutes=30)))
    assert isinstance(later, RaiseBid) and later.value == pytest.approx(7.5)


def test_withdraw_above() -> None:
    """WithdrawAbove withdraws pending workloads whose reference price passed the value."""
    market = MarketView(
        "a",
        "r-1",
        T0,
        prices=(
            PriceRecord(
                "r-1",
                T0,
                {"H100-80GB": 3.0, "A100-SXM4-80GB": 2.5, "A100-SXM4-80GB-MIG-1g.10gb": 1.0},
            ),
        ),
    )
    whole = _pods(WorkloadSpec("whole", bid=1.0))
    mig = _pods(WorkloadSpec("mig", bid=1.0, mig_profile="1g.10gb"))
    running = _pods(WorkloadSpec("run", bid=1.0), node="n", price=1)
    view = _view(whole, mig, running, market=market)
    assert WithdrawAbove(2.0).decide(view) == [Withdraw("whole", "clearing 2.5 > value 2")]
    assert [a.name for a in WithdrawAbove(0.5).decide(view) if isinstance(a, Withdraw)] == [
        "mig",
        "whole",
    ]
    assert WithdrawAbove(2.8, model="H100-80GB").decide(view) == [
        Withdraw("mig", "clearing 3 > value 2.8"),
        Withdraw("whole", "clearing 3 > value 2.8"),
    ]
    assert WithdrawAbove(0.5).decide(_view(whole)) == []  # no market yet


def test_shrink_when_outbid() -> None:
    """ShrinkWhenOutbid steps down the profile, then halves replicas, once per loss."""
    outbid = PodOutcome("r-1", "outbid", 1.0)
    policy = ShrinkWhenOutbid(min_replicas=2, profiles=["3g.40gb", "2g.20gb", "1g.10gb"])
    mig = _pods(WorkloadSpec("m", bid=1.0, mig_profile="3g.40gb"))
    small = _pods(WorkloadSpec("s", bid=1.0, mig_profile="1g.10gb", replicas=5))
    floor = _pods(WorkloadSpec("f", bid=1.0, replicas=2))
    market = _market(m=outbid, s_0=outbid, f_0=outbid)
    actions = policy.decide(_view(mig, small, floor, market=market))
    assert actions == [
        Keep("f", "outbid, already at its smallest"),
        Shrink("m", mig_profile="2g.20gb", reason="outbid: 2g.20gb"),
        Shrink("s", replicas=3, reason="outbid: 3 replicas"),
    ]
    later = _market("r-2", m=outbid)
    assert policy.decide(_view(mig, market=later)) == []
    won = _market(m=PodOutcome("r-1", "won", 1.0))
    assert policy.decide(_view(mig, market=won)) == []


def test_chain_first_policy_to_act_wins() -> None:
    """Chain keeps the first non-Keep action per workload: a withdrawal beats a shrink."""
    market = MarketView(
        "a",
        "r-1",
        T0,
        prices=(PriceRecord("r-1", T0, {"A100-SXM4-80GB-MIG-3g.40gb": 9.0}),),
        outcomes={f"{NS}/m": PodOutcome("r-1", "outbid", 1.0)},
    )
    mig = _pods(WorkloadSpec("m", bid=1.0, mig_profile="3g.40gb"))
    chain = Chain([WithdrawAbove(5.0), ShrinkWhenOutbid(profiles=["3g.40gb", "1g.10gb"])])
    assert chain.decide(_view(mig, market=market)) == [Withdraw("m", "clearing 9 > value 5")]
    assert Chain([ShrinkWhenOutbid(profiles=["3g.40gb", "1g.10gb"]), WithdrawAbove(5.0)]).decide(
        _view(mig, market=market)
    ) == [Shrink("m", mig_profile="1g.10gb", reason="outbid: 1g.10gb")]


def test_describe_action() -> None:
    """Every action reads as one line."""
    assert describe_action(RaiseBid("a", 2.5, "late")) == "raise bid of a to 2.5 (late)"
    assert describe_action(Shrink("a", replicas=2, mig_profile="1g.10gb")) == (
        "shrink a to 2 replicas, MIG 1g.10gb"
    )
    spec = WorkloadSpec("n", bid=3.0, milli=300, replicas=2)
    assert describe_action(Submit(spec)) == "submit n: 2 x 300 milli-GPU, bid 3"
    assert describe_action(Keep()) == "keep everything"


# --- the example agents ---------------------------------------------------------------------


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["inference", "research_sweep", "batch_eval"])
def test_example_help(name: str) -> None:
    """Each example program runs and answers --help with its common options."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for option in ("--kubeconfig", "--rounds", "--namespace"):
        assert option in out


def test_inference_scales_with_a_load_spike() -> None:
    """The inference agent adds replicas in a spike, raises outbid bids, then sheds surplus."""
    inf = _example("inference")
    assert inf.replicas_needed(90, 50, 0.1) == 3  # 90 / (50 - 10)
    assert inf.replicas_needed(0, 50, 0.1, minimum=1) == 1
    load = inf.parse_schedule("0:20,2:150,4:20")
    assert [load(i) for i in range(5)] == [20, 20, 150, 150, 20]
    policy = inf.InferencePolicy("svc", 40.0, 50.0, 0.1, load, start_fraction=0.8)
    first = policy.decide(_view())
    assert [(a.name, a.spec.bid, a.spec.max_price) for a in first] == [("svc-r0", 32.0, 40.0)]
    r0 = _pods(WorkloadSpec("svc-r0", bid=32.0), node="n", price=10)
    policy.decide(_view(r0))
    spike = policy.decide(_view(r0))
    assert [a.name for a in spike if isinstance(a, Submit)] == ["svc-r1", "svc-r2", "svc-r3"]
    outbid = _market(svc_r1=PodOutcome("r-1", "outbid", 32.0))
    r1 = _pods(WorkloadSpec("svc-r1", bid=32.0))
    r2 = _pods(WorkloadSpec("svc-r2", bid=32.0), node="n", price=10)
    raised = policy.decide(_view(r0, r1, r2, market=outbid))
    assert RaiseBid("svc-r1", 36.0, "outbid at 32") in raised
    calm = policy.decide(_view(r0, r1, r2, market=outbid))
    assert [a for a in calm if isinstance(a, Withdraw)] == [
        Withdraw("svc-r1", "load 20/s needs 1 replica(s), 3 live"),
        Withdraw("svc-r2", "load 20/s needs 1 replica(s), 3 live"),
    ]


def test_research_sweep_budget_withdraw_and_shrink() -> None:
    """The sweep submits within budget, shrinks when outbid, withdraws when prices pass."""
    sweep = _example("research_sweep")
    specs = sweep.trial_specs("sw", 8, 0.75, 4.0, "3g.40gb")
    assert [s.bid for s in specs] == [0.5] * 8 and specs[0].mig_profile == "3g.40gb"
    policy = sweep.SweepPolicy(specs[:2], 2.0, ["3g.40gb", "1g.10gb"])
    assert [a.name for a in policy.decide(_view())] == ["sw-t0", "sw-t1"]
    market = MarketView(
        "a",
        "r-1",
        T0,
        prices=(PriceRecord("r-1", T0, {"A100-SXM4-80GB-MIG-3g.40gb": 1.0}),),
        outcomes={f"{NS}/sw-t0": PodOutcome("r-1", "outbid", 0.5)},
    )
    t0 = _pods(specs[0])
    t1 = _pods(specs[1])
    assert policy.decide(_view(t0, t1, market=market)) == [
        Shrink("sw-t0", mig_profile="1g.10gb", reason="outbid: 1g.10gb")
    ]
    dear = MarketView(
        "a", "r-2", T0, prices=(PriceRecord("r-2", T0, {"A100-SXM4-80GB-MIG-3g.40gb": 2.5}),)
    )
    assert [a.name for a in policy.decide(_view(t0, t1, market=dear))] == ["sw-t0", "sw-t1"]


def test_batch_eval_follows_the_deadline() -> None:
    """The batch evaluation submits its gang once at half its value, then follows the deadline."""
    batch = _example("batch_eval")
    assert batch.parse_deadline("+60", T0) == T0 + timedelta(seconds=60)
    with pytest.raises(ValueError):
        batch.parse_deadline("2026-12-07T10:00:00", T0)
    policy = batch.make_policy("ev", 20.0, T0 + timedelta(hours=1), replicas=2, start=T0)
    (submit,) = policy.decide(_view())
    assert isinstance(submit, Submit)
    assert (submit.spec.bid, submit.spec.max_price, submit.spec.replicas) == (10.0, 20.0, 2)
    pods = _pods(submit.spec)
    (raise_,) = policy.decide(_view(pods, now=T0 + timedelta(minutes=45)))
    assert isinstance(raise_, RaiseBid) and raise_.value == pytest.approx(17.5)
