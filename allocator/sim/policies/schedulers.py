"""The Kubernetes schedulers of the mixed scenario, ``fifo`` and ``kai``, as policies.

Both are :mod:`allocator.sim.baselines` rounds: a job is seen by its preferred alternative only
(so a job they start always runs on it), with its KAI priority class (inference 125, research
50). ``fifo`` is kube-scheduler without priority classes (arrival order, no preemption); ``kai``
follows the KAI Scheduler's cycle over a queue tree made per run (:func:`kai_queues`). They place
through the engine in a fixed way (greedy, ``alpha=0``, see :mod:`allocator.sim.baselines`): the
run's solve options do not apply to them.
"""

from __future__ import annotations

from collections.abc import Sequence

from allocator.model import GpuModel, Node
from allocator.sim.baselines import (
    KAI_INFERENCE_PRIORITY,
    KAI_TRAIN_PRIORITY,
    Decision,
    Job,
    KaiQueue,
    Running,
    fifo_round,
    kai_round,
)
from allocator.sim.mixed import MixedPod, Workload
from allocator.sim.policies.registry import MixedSetup, register

__all__ = ["FifoPolicy", "KaiPolicy", "job_of", "kai_queues", "running_of"]


def job_of(pod: MixedPod) -> Job:
    """The pod as a baseline sees it: one request, its preferred alternative (baselines only
    ever place that one, so ``chosen`` stays 0 under them)."""
    prio = KAI_INFERENCE_PRIORITY if pod.klass == "inference" else KAI_TRAIN_PRIORITY
    return Job(pod.id, pod.agent, prio, pod.arrival, pod.alternative, pod.equivalents)


def running_of(live: Sequence[MixedPod]) -> list[Running]:
    """Running pods as the baselines see them."""
    return [Running(job_of(p), p.placements, p.start) for p in live]


def kai_queues(workload: Workload, capacity: float, quota_margin: float = 2.5) -> list[KaiQueue]:
    """The KAI queue tree for ``workload``: departments ``inference`` (queue priority 1) and
    ``research``; one leaf queue per agent. Inference's deserved quota is ``quota_margin`` x its
    offered load, split among its agents by their share of its arrivals; research gets the rest
    of the cluster, split evenly. Over-quota weights are all 1."""
    per_agent: dict[str, float] = {}
    for p in workload.pods:
        per_agent[p.agent] = per_agent.get(p.agent, 0.0) + p.equivalents * p.duration
    inf_quota = min(quota_margin * workload.offered["inference"], capacity)
    inf_agents = [a for a, k in workload.agents.items() if k == "inference"]
    res_agents = [a for a, k in workload.agents.items() if k == "research"]
    inf_total = sum(per_agent.get(a, 0.0) for a in inf_agents) or 1.0
    queues = [
        KaiQueue("inference", None, inf_quota, priority=1, created=0),
        KaiQueue("research", None, capacity - inf_quota, priority=0, created=1),
    ]
    for i, a in enumerate(inf_agents):
        share = per_agent.get(a, 0.0) / inf_total
        queues.append(KaiQueue(a, "inference", inf_quota * share, created=2 + i))
    for i, a in enumerate(res_agents):
        queues.append(
            KaiQueue(
                a, "research", (capacity - inf_quota) / max(len(res_agents), 1), created=50 + i
            )
        )
    return queues


class FifoPolicy:
    """kube-scheduler's habit: pending jobs in arrival order, each placed if it fits."""

    def __init__(self, setup: MixedSetup | None = None) -> None:
        pass

    def __call__(
        self,
        nodes: tuple[Node, ...],
        extra_models: tuple[GpuModel, ...],
        pending: Sequence[MixedPod],
        running: Sequence[MixedPod],
        round_index: int,
    ) -> Decision:
        return fifo_round(nodes, extra_models, [job_of(p) for p in pending], running_of(running))


class KaiPolicy:
    """One KAI scheduling cycle per round over the run's queue tree."""

    def __init__(self, setup: MixedSetup) -> None:
        self.capacity = setup.capacity
        self.queues = kai_queues(setup.workload, setup.capacity)

    def __call__(
        self,
        nodes: tuple[Node, ...],
        extra_models: tuple[GpuModel, ...],
        pending: Sequence[MixedPod],
        running: Sequence[MixedPod],
        round_index: int,
    ) -> Decision:
        jobs = [job_of(p) for p in pending]
        return kai_round(nodes, extra_models, jobs, running_of(running), self.queues, self.capacity)


register("fifo", "mixed", FifoPolicy, summary="kube-scheduler: arrival order, no preemption")
register("kai", "mixed", KaiPolicy, summary="KAI Scheduler: queues, quotas, fair share, reclaim")
