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
from allocator.sim.mixed import MIXED_POLICIES, generate_workload, run_mixed
from allocator.sim.traces import data_dir

SPOT = data_dir() / "spot-gpu" / "node_info_df.csv"
pytestmark = pytest.mark.skipif(not SPOT.is_file(), reason="spot-gpu node list not present")


@pytest.mark.parametrize("policy", MIXED_POLICIES)
def test_short_run_invariants(policy: str) -> None:
    """A short run keeps every pod in one state, waits >= 0, allocation <= capacity, and (with
    verify) every round's running set passes the model's occupancy check and every auction
    round passes the independent verify."""
    rounds = 6
    run = run_mixed(policy, seed=3, gpus=128, rounds=rounds, verify=True)
    c = run.counts()
    arrived = sum(p.state != "future" for p in run.pods)
    assert c["running"] + c["waiting"] + c["departed"] == c["arrived"] == arrived
    assert arrived > 0 and len(run.times) == rounds
    for klass in ("inference", "research"):
        assert (run.waits(klass) >= 0).all()
    assert all(0 <= a <= run.capacity + 1e-9 for a in run.allocated)
    assert all(p.preemptions == 0 for p in run.pods if p.klass == "inference")
    if policy == "fifo":
        assert sum(run.preempted) == 0
    if policy == "auction":
        assert run.verified_rounds == rounds
    s = run.summary()
    assert s["arrived"] == arrived and 0.0 <= s["alloc_mean"] <= 1.0


def test_workload_is_seeded() -> None:
    """The same seed gives the same workload; another seed a different one."""
    from allocator.instances import spot_gpu_nodes

    nodes = spot_gpu_nodes(SPOT, 128)
    a = generate_workload(nodes, 7, 600.0)
    b = generate_workload(nodes, 7, 600.0)
    c = generate_workload(nodes, 8, 600.0)
    key = [(p.arrival, p.agent, p.alternative) for p in a.pods]
    assert key == [(p.arrival, p.agent, p.alternative) for p in b.pods]
    assert key != [(p.arrival, p.agent, p.alternative) for p in c.pods]
    assert {p.klass for p in a.pods} == {"inference", "research"}


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
    """On a full 2-GPU node, KAI evicts the over-fair-share training job for an in-quota inference
    job (reclaim); fifo leaves the inference job waiting."""
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
    """KAI does not reclaim from a department within its deserved quota (quota protection),
    even for an in-quota inference job."""
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
