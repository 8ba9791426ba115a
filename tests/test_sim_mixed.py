"""The mixed-priority scenario (allocator.sim.mixed) and its baselines (allocator.sim.baselines)."""

from __future__ import annotations

import pytest

from allocator.model import Alternative, Gpu, Node, Placement, Unit
from allocator.sim.baselines import (
    KAI_INFERENCE_PRIORITY,
    KAI_TRAIN_PRIORITY,
    Job,
    KaiQueue,
    Running,
    fifo_round,
    kai_round,
)
from allocator.sim.mixed import (
    MIXED_POLICIES,
    MixedPod,
    Workload,
    generate_workload,
    run_mixed,
)
from allocator.sim.policies.auction import AuctionPolicy
from allocator.sim.traces import data_dir
from allocator.solvers import SolveParams

SPOT = data_dir() / "spot-gpu" / "node_info_df.csv"
pytestmark = pytest.mark.skipif(not SPOT.is_file(), reason="spot-gpu node list not present")


def _placed_equivalents(reps: tuple[Placement, ...]) -> float:
    """GPU-equivalents a pod's placements hold (whole GPU 1, share milli/1000, MIG compute/7)."""
    total = 0.0
    for r in reps:
        if r.mig_profile is not None:
            total += int(r.mig_profile.split("g", 1)[0]) / 7
        elif r.milli:
            total += r.milli / 1000
        else:
            total += len(r.gpus)
    return total


def _matches(alt: Alternative, reps: tuple[Placement, ...]) -> bool:
    """Whether ``reps`` are ``alt.replicas`` replicas of ``alt.unit``."""
    u = alt.unit
    if len(reps) != alt.replicas:
        return False
    if u.kind == "mig":
        return all(r.mig_profile == u.profile for r in reps)
    if u.kind == "share":
        return all(r.milli == u.milli and r.mig_profile is None for r in reps)
    return all(len(r.gpus) == u.gpus and not r.milli and r.mig_profile is None for r in reps)


@pytest.mark.parametrize("policy", MIXED_POLICIES)
@pytest.mark.parametrize("spread", [0.0, 0.7])
def test_short_run_invariants(policy: str, spread: float) -> None:
    """Short run: states, waits, allocation = placements, accounted alternative, verify."""
    # Every pod in one state; waits >= 0; allocation <= capacity and equal to what placements
    # hold; each running pod on the alternative it is accounted as (the preferred one under the
    # baselines); every round's running set valid; every auction round passes verify.
    rounds = 6
    run = run_mixed(policy, seed=3, gpus=128, rounds=rounds, verify=True, spread=spread)
    c = run.counts()
    arrived = sum(p.state != "future" for p in run.pods)
    assert c["running"] + c["waiting"] + c["departed"] == c["arrived"] == arrived
    assert arrived > 0 and len(run.times) == rounds
    for klass in ("inference", "research"):
        assert (run.waits(klass) >= 0).all()
    assert all(0 <= a <= run.capacity + 1e-9 for a in run.allocated)
    running = [p for p in run.pods if p.state == "running"]
    for p in running:
        assert _matches(p.alternative, p.placements), p.id
        assert p.equivalents == pytest.approx(_placed_equivalents(p.placements))
    assert run.allocated[-1] == pytest.approx(
        sum(_placed_equivalents(p.placements) for p in running)
    )
    for p in run.pods:
        assert p.state != "pending" or p.chosen == 0  # pending: bids all alternatives again
    assert all(p.preemptions == 0 for p in run.pods if p.klass == "inference")
    if policy == "fifo":
        assert sum(run.preempted) == 0
    if policy == "auction":
        assert run.verified_rounds == rounds
    else:
        assert all(p.chosen == 0 for p in run.pods)
    s = run.summary()
    assert s["arrived"] == arrived and 0.0 <= s["alloc_mean"] <= 1.0


def test_workload_is_seeded() -> None:
    """The same seed gives the same workload; another seed a different one."""
    from allocator.instances import spot_gpu_nodes

    nodes = spot_gpu_nodes(SPOT, 128)
    a = generate_workload(nodes, 7, 600.0)
    b = generate_workload(nodes, 7, 600.0)
    c = generate_workload(nodes, 8, 600.0)
    key = [(p.arrival, p.agent, p.alternatives) for p in a.pods]
    assert key == [(p.arrival, p.agent, p.alternatives) for p in b.pods]
    assert key != [(p.arrival, p.agent, p.alternatives) for p in c.pods]
    assert {p.klass for p in a.pods} == {"inference", "research"}


def test_workload_alternatives() -> None:
    """Fallbacks follow the preferred unit, never outvalue it; spread adds only a spread gang."""
    from allocator.instances import spot_gpu_nodes

    nodes = spot_gpu_nodes(SPOT, 128)
    plain = generate_workload(nodes, 5, 1800.0, spread=0.0)
    spread = generate_workload(nodes, 5, 1800.0)  # DEFAULT_SPREAD, 0.7
    assert len(plain.pods) == len(spread.pods)
    for p, q in zip(plain.pods, spread.pods, strict=True):
        assert q.alternatives[: len(p.alternatives)] == p.alternatives
        assert len(p.sizes) == len(p.alternatives)
        first = p.alternatives[0]
        assert all(a.value <= first.value for a in q.alternatives)
        kinds = [a.unit.kind for a in p.alternatives]
        u = first.unit
        if p.klass == "research":
            assert u.kind == "whole"
            if u.gpus == 1:
                assert kinds == ["whole", "mig"] and p.alternatives[1].unit.profile == "7g.80gb"
                assert p.alternatives[1].replicas == first.replicas
            else:
                assert kinds == ["whole"]
            if u.gpus * first.replicas > 1:
                extra = q.alternatives[-1]
                assert extra.unit == Unit("whole") and extra.locality == "any"
                assert extra.replicas == u.gpus * first.replicas
                assert extra.value == pytest.approx(0.7 * first.value, abs=1e-3)
            else:
                assert q.alternatives == p.alternatives
        elif u.kind == "whole":
            assert kinds == ["whole", "mig"]
        elif u.profile == "7g.80gb":
            assert kinds == ["mig", "whole"]
        else:
            assert kinds in (["mig", "share", "whole"], ["share", "mig", "whole"])
    three_g = next(
        p
        for p in plain.pods
        if p.klass == "inference" and p.alternatives[0].unit.profile == "3g.40gb"
    )
    assert three_g.alternatives[1].unit == Unit("share", milli=430)
    assert three_g.alternatives[1].value == pytest.approx(
        0.9 * three_g.alternatives[0].value, abs=1e-3
    )
    assert three_g.sizes == pytest.approx((3 / 7, 0.43, 1.0))


def _tiny() -> tuple[tuple[Node, ...], Running, Job]:
    node = Node("n0", gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    research = Job(
        "train", "res0", KAI_TRAIN_PRIORITY, 0.0, Alternative(2.0, Unit("whole", gpus=2)), 2.0
    )
    serve = Job(
        "serve", "inf0", KAI_INFERENCE_PRIORITY, 30.0, Alternative(20.0, Unit("whole")), 1.0
    )
    return (node,), Running(research, (Placement("n0", (0, 1)),), 0.0), serve


def test_kai_reclaims_research_for_inference_and_fifo_waits() -> None:
    """Full node: KAI reclaims the over-fair-share training GPU for inference; fifo waits."""
    nodes, running, serve = _tiny()
    queues = [
        KaiQueue("inference", None, 1.0, priority=1),
        KaiQueue("research", None, 1.0, created=1),
        KaiQueue("inf0", "inference", 1.0, created=2),
        KaiQueue("res0", "research", 1.0, created=3),
    ]
    kai = kai_round(nodes, (), [serve], [running], queues, 2.0)
    assert kai.evicted == ("train",)
    assert set(kai.started) == {"serve"}
    fifo = fifo_round(nodes, (), [serve], [running])
    assert fifo.started == {} and fifo.evicted == ()


def test_kai_keeps_in_quota_research() -> None:
    """KAI does not reclaim from a department within its deserved quota (quota protection)."""
    nodes, running, serve = _tiny()
    queues = [
        KaiQueue("inference", None, 1.0, priority=1),
        KaiQueue("research", None, 2.0, created=1),
        KaiQueue("inf0", "inference", 1.0, created=2),
        KaiQueue("res0", "research", 2.0, created=3),
    ]
    kai = kai_round(nodes, (), [serve], [running], queues, 2.0)
    assert kai.evicted == () and kai.started == {}


def test_fifo_places_in_arrival_order() -> None:
    """fifo tries jobs oldest first: with one free GPU the older of two 1-GPU jobs gets it."""
    node = Node("n0", gpus=(Gpu(0, "H100"),))
    old = Job("old", "a", KAI_TRAIN_PRIORITY, 1.0, Alternative(1.0, Unit("whole")), 1.0)
    new = Job("new", "b", KAI_INFERENCE_PRIORITY, 2.0, Alternative(50.0, Unit("whole")), 1.0)
    d = fifo_round((node,), (), [new, old], [])
    assert set(d.started) == {"old"}


def test_bad_policy_is_rejected() -> None:
    """An unknown policy name raises ValueError naming the field."""
    with pytest.raises(ValueError, match="policy"):
        run_mixed("nope", seed=0, rounds=1)


def test_share_pod_takes_whole_gpu_fallback_under_auction_fifo_waits() -> None:
    """Full shared GPU: the auction places a share pod by its whole-GPU fallback; fifo waits."""
    # 500 milli do not fit beside 750: the auction evicts the research GPU (fallback worth 8 >
    # research's 1 + 0.5 eviction cost); fifo sees only the preferred share.
    node = Node("n0", gpus=(Gpu(0, "H100", mode="shared"), Gpu(1, "H100")))
    share, whole = Alternative(10.0, Unit("share", milli=500)), Alternative(8.0, Unit("whole"))
    serve = MixedPod("serve", "inf0", "inference", 30.0, 600.0, (share, whole), (0.5, 1.0), 600.0)
    busy = MixedPod(
        "busy", "inf1", "inference", 0.0, 600.0,
        (Alternative(15.0, Unit("share", milli=750)),), (0.75,), 600.0,
        placements=(Placement("n0", (0,), milli=750),), state="running",
    )  # fmt: skip
    train = MixedPod(
        "train", "res0", "research", 0.0, 3600.0,
        (Alternative(1.0, Unit("whole")),), (1.0,), 3600.0,
        placements=(Placement("n0", (1,)),), state="running",
    )  # fmt: skip
    agents = {"inf0": "inference", "inf1": "inference", "res0": "research"}
    auction = AuctionPolicy(
        Workload((serve, busy, train), agents, {}),
        (node,),
        params=SolveParams(solver="greedy", time_limit=0.1),
        seed=0,
        check=True,
    )
    d = auction((node,), (), [serve], [busy, train], 0)
    assert auction.verified == 1
    assert d.evicted == ("train",)
    assert d.started == {"serve": (Placement("n0", (1,)),)} and d.chosen == {"serve": 1}
    runs = [Running(Job(p.id, p.agent, KAI_TRAIN_PRIORITY, 0.0, p.alternative, p.equivalents),
                    p.placements, 0.0) for p in (busy, train)]  # fmt: skip
    job = Job("serve", "inf0", KAI_INFERENCE_PRIORITY, 30.0, share, 0.5)
    fifo = fifo_round((node,), (), [job], runs)
    assert fifo.started == {} and fifo.evicted == ()
