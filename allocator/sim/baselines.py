"""Baseline schedulers for the mixed-priority scenario: ``fifo`` and ``kai``, one round each.

Both place through the project's engine (:func:`allocator.solvers.allocate`: what
:func:`~allocator.solvers.solve` allocates, without payments or a Result; greedy with ``alpha=0``
so that the ranking is the bid value alone): a policy only decides the *order*
in which pending jobs are tried and *which* running jobs may be evicted, by encoding that order
as strictly decreasing values and eviction rights as incumbents' ``preemptible`` flags and values.
The engine's greedy tries every bid once in value order, places it if it fits (evicting only
incumbents whose value plus cost is below the bid's) and skips it otherwise: exactly "try each
job in this order, place it if it fits, a job that does not fit waits".

* ``fifo`` is kube-scheduler's habit without priority classes: jobs in arrival order, each
  placed if it fits, no preemption.
* ``kai`` follows the NVIDIA KAI Scheduler's documented cycle (allocate, then reclaim), with
  two-level queues, deserved quotas, over-quota weights, fair shares and its queue order; what it
  leaves out is listed in docs/simulator-mixed.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from allocator.model import (
    Alternative,
    Bid,
    GpuModel,
    Incumbent,
    Node,
    Placement,
    Problem,
    Wallet,
)
from allocator.solvers import SolveParams, allocate

__all__ = [
    "KAI_INFERENCE_PRIORITY",
    "KAI_NON_PREEMPTIBLE",
    "KAI_TRAIN_PRIORITY",
    "Decision",
    "Job",
    "KaiQueue",
    "Running",
    "divide_fair_share",
    "fifo_round",
    "kai_round",
]

#: KAI's predefined priority classes used here (docs/priority/README.md of KAI-Scheduler).
KAI_TRAIN_PRIORITY = 50
KAI_INFERENCE_PRIORITY = 125
#: A priority class at or above this value is non-preemptible and may use in-quota resources only.
KAI_NON_PREEMPTIBLE = 100

_WALLET = "cluster"
#: How the baselines call the engine: one greedy pass, bids ranked by value alone.
ENGINE_PARAMS = SolveParams(solver="greedy", alpha=0.0)
_BIG = 1e6  # value band of KAI reclaimers: far above the summed value of any set of victims


@dataclass(frozen=True, slots=True)
class Job:
    """A pending or running job (one gang) as a baseline sees it.

    ``queue`` is the leaf queue (the agent); ``priority`` the KAI priority class value;
    ``alternative`` the single request (its value is the job's real value, unused for ordering).
    """

    id: str
    queue: str
    priority: int
    arrival: float
    alternative: Alternative
    equivalents: float


@dataclass(frozen=True, slots=True)
class Running:
    """A running job: where its replicas are and when it (last) started."""

    job: Job
    placements: tuple[Placement, ...]
    start: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What one round decided: new placements by job id, evicted job ids, engine calls, and
    which alternative of its bid each started job won (``chosen``; absent means 0, the only
    one a baseline job has); ``verified``: the round was checked by :mod:`allocator.verify`."""

    started: Mapping[str, tuple[Placement, ...]]
    evicted: tuple[str, ...] = ()
    engine_calls: int = 0
    seconds: float = 0.0
    chosen: Mapping[str, int] = field(default_factory=dict)
    verified: bool = False


@dataclass(frozen=True, slots=True)
class KaiQueue:
    """A KAI queue: ``parent`` is None for a top-level (department) queue.

    ``quota`` is the deserved quota in GPU-equivalents; ``weight`` the over-quota weight;
    ``priority`` the queue priority (only orders over-quota distribution and the queue order).
    """

    name: str
    parent: str | None
    quota: float
    weight: float = 1.0
    priority: int = 0
    created: int = 0


@dataclass
class _QueueState:
    """Per-cycle accounting of one queue (GPU-equivalents)."""

    queue: KaiQueue
    allocated: float = 0.0
    requested: float = 0.0
    fair: float = 0.0
    children: list[str] = field(default_factory=list)


def _engine_round(
    nodes: tuple[Node, ...],
    extra_models: tuple[GpuModel, ...],
    bids: Sequence[tuple[Job, float]],
    incumbents: Sequence[tuple[Running, float, bool]],
) -> tuple[dict[str, tuple[Placement, ...]], list[str]]:
    """One greedy pass with ``alpha=0``: bids tried in decreasing ``value``, placed if they fit.

    ``incumbents`` gives each running job a value and whether it may be evicted.
    """
    if not bids:
        return {}, []
    problem = Problem(
        nodes=nodes,
        wallets=(Wallet(_WALLET, 1e12),),
        bids=tuple(
            Bid(
                job.id,
                job.queue,
                _WALLET,
                (_with_value(job.alternative, value),),
            )
            for job, value in bids
        ),
        incumbents=tuple(
            Incumbent(
                r.job.id,
                r.job.queue,
                value=value,
                placements=r.placements,
                preemptible=preemptible,
                wallet=_WALLET,
            )
            for r, value, preemptible in incumbents
        ),
        extra_models=extra_models,
    )
    alloc = allocate(problem, ENGINE_PARAMS)
    started = {problem.bids[b].id: reps for b, (_a, reps) in alloc.winners.items()}
    evicted = [problem.incumbents[i].id for i in sorted(alloc.evicted)]
    return started, evicted


def _with_value(alt: Alternative, value: float) -> Alternative:
    return Alternative(
        value=value,
        unit=alt.unit,
        replicas=alt.replicas,
        cpu_milli=alt.cpu_milli,
        memory_mib=alt.memory_mib,
        models=alt.models,
        min_gpu_memory_gb=alt.min_gpu_memory_gb,
        locality=alt.locality,
    )


def _rank_values(count: int) -> list[float]:
    """Strictly decreasing positive values for ``count`` jobs in order."""
    return [float(count - k) for k in range(count)]


# ---------------------------------------------------------------------- fifo
def fifo_round(
    nodes: tuple[Node, ...],
    extra_models: tuple[GpuModel, ...],
    pending: Sequence[Job],
    running: Sequence[Running],
) -> Decision:
    """kube-scheduler's habit: pending jobs in arrival order, each placed if it fits, no
    preemption (every running job is a non-preemptible incumbent)."""
    t0 = time.perf_counter()
    order = sorted(pending, key=lambda j: (j.arrival, j.id))
    values = _rank_values(len(order))
    started, _ = _engine_round(
        nodes,
        extra_models,
        list(zip(order, values, strict=True)),
        [(r, 1.0, False) for r in running],
    )
    return Decision(started, (), 1 if order else 0, time.perf_counter() - t0)


# ---------------------------------------------------------------------- kai
def divide_fair_share(total: float, queues: Sequence[_QueueState]) -> None:
    """KAI's resource division among sibling queues (docs/fairness/README.md): first every queue
    gets ``min(quota, requested)``; what remains goes to the highest queue priority first and,
    within one priority, is water-filled by over-quota weight, never past a queue's request."""
    for q in queues:
        q.fair = min(q.queue.quota, q.requested)
    left = total - sum(q.fair for q in queues)
    for prio in sorted({q.queue.priority for q in queues}, reverse=True):
        bucket = [q for q in queues if q.queue.priority == prio]
        while left > 1e-9:
            hungry = [q for q in bucket if q.requested - q.fair > 1e-9]
            if not hungry:
                break
            weight = sum(max(q.queue.weight, 0.0) for q in hungry)
            if weight <= 0:
                break
            step = min(
                min((q.requested - q.fair) * weight / q.queue.weight for q in hungry),
                left,
            )
            for q in hungry:
                q.fair += step * q.queue.weight / weight
            left -= step


def _share(state: _QueueState, extra: float) -> float:
    """Dominant (here: GPU) share with ``extra`` added: allocated over fair share."""
    if state.fair <= 1e-12:
        return 1e9 * (state.allocated + extra)
    return (state.allocated + extra) / state.fair


def _queue_key(state: _QueueState, job: Job) -> tuple[bool, bool, int, float, int]:
    """KAI's queue order (plugins/proportion/queue_order): under-used queues first, then queues
    that stay within their deserved quota with the job, then higher queue priority, then the
    smaller dominant share with the job, then the older queue."""
    eq = job.equivalents
    return (
        state.allocated > state.fair + 1e-9,
        state.allocated + eq > state.queue.quota + 1e-9,
        -state.queue.priority,
        _share(state, eq),
        state.queue.created,
    )


def _kai_order(
    pending: Sequence[Job],
    states: Mapping[str, _QueueState],
    *,
    starved_only: bool,
) -> list[Job]:
    """Pending jobs in KAI's allocation order, accounting each as allocated when taken.

    Jobs of each leaf queue go by priority, then creation time. A non-preemptible job is only
    taken while its leaf queue stays within its deserved quota. With ``starved_only`` (reclaim),
    a job is taken only if its department stays within its deserved quota or fair share.
    """
    by_queue: dict[str, list[Job]] = {}
    for j in sorted(pending, key=lambda j: (-j.priority, j.arrival, j.id)):
        by_queue.setdefault(j.queue, []).append(j)
    heads = {q: 0 for q in by_queue}
    alloc = {name: s.allocated for name, s in states.items()}
    order: list[Job] = []
    while True:
        best: tuple[tuple[object, ...], str] | None = None
        for q, jobs in by_queue.items():
            if heads[q] >= len(jobs):
                continue
            job = jobs[heads[q]]
            leaf = states[q]
            dept = states[leaf.queue.parent] if leaf.queue.parent else leaf
            key = (
                *_queue_key(_with_alloc(dept, alloc), job),
                *_queue_key(_with_alloc(leaf, alloc), job),
            )
            if best is None or key < best[0]:
                best = (key, q)
        if best is None:
            return order
        q = best[1]
        job = by_queue[q][heads[q]]
        heads[q] += 1
        leaf = states[q]
        parent = leaf.queue.parent
        eq = job.equivalents
        if job.priority >= KAI_NON_PREEMPTIBLE and alloc[q] + eq > leaf.queue.quota + 1e-9:
            continue  # non-preemptible work never goes over quota
        if starved_only and parent is not None:
            dept = states[parent]
            within = alloc[parent] + eq <= max(dept.queue.quota, dept.fair) + 1e-9
            if not within:
                continue
        order.append(job)
        alloc[q] += eq
        if parent is not None:
            alloc[parent] += eq


def _with_alloc(state: _QueueState, alloc: Mapping[str, float]) -> _QueueState:
    return _QueueState(state.queue, alloc[state.queue.name], state.requested, state.fair)


def _kai_states(
    queues: Sequence[KaiQueue],
    pending: Sequence[Job],
    running: Sequence[Running],
    capacity: float,
) -> dict[str, _QueueState]:
    states = {q.name: _QueueState(q) for q in queues}
    for q in queues:
        if q.parent is not None:
            states[q.parent].children.append(q.name)
    for r in running:
        states[r.job.queue].allocated += r.job.equivalents
        states[r.job.queue].requested += r.job.equivalents
    for j in pending:
        states[j.queue].requested += j.equivalents
    tops = [s for s in states.values() if s.queue.parent is None]
    for top in tops:
        top.allocated = sum(states[c].allocated for c in top.children) + top.allocated
        top.requested = sum(states[c].requested for c in top.children) + top.requested
    divide_fair_share(capacity, tops)
    for top in tops:
        divide_fair_share(top.fair, [states[c] for c in top.children])
    return states


def kai_round(
    nodes: tuple[Node, ...],
    extra_models: tuple[GpuModel, ...],
    pending: Sequence[Job],
    running: Sequence[Running],
    queues: Sequence[KaiQueue],
    capacity: float,
) -> Decision:
    """One KAI scheduling cycle: allocate (no evictions, in KAI's queue order, bin-packed by the
    engine), then reclaim (jobs of departments under their deserved quota or fair share evict
    preemptible jobs of departments above their fair share, without taking them below it).

    Preempt (within one queue, strictly lower priority) never applies here: every leaf queue
    holds jobs of one priority class. Consolidation and reclaim between sibling leaf queues are
    left out (docs/simulator-mixed.md).
    """
    t0 = time.perf_counter()
    cycle = _KaiCycle(nodes, extra_models, queues, capacity, list(pending), list(running))
    cycle.allocate()
    cycle.reclaim()
    return Decision(cycle.started, tuple(cycle.evicted), cycle.calls, time.perf_counter() - t0)


@dataclass
class _KaiCycle:
    """The state of one KAI cycle: what waits, what runs, what it started and evicted."""

    nodes: tuple[Node, ...]
    extra_models: tuple[GpuModel, ...]
    queues: Sequence[KaiQueue]
    capacity: float
    waiting: list[Job]
    live: list[Running]
    started: dict[str, tuple[Placement, ...]] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    calls: int = 0

    def allocate(self) -> None:
        """Jobs in KAI's queue order, placed if they fit, no evictions. The order assumes each
        job taken is placed; a job refused for quota is retried in a further pass if jobs
        before it did not fit and so left quota unused."""
        tried: set[str] = set()
        for _ in range(3):
            states = _kai_states(self.queues, self.waiting, self.live, self.capacity)
            order = [
                j for j in _kai_order(self.waiting, states, starved_only=False) if j.id not in tried
            ]
            if not order:
                break
            got, _ = _engine_round(
                self.nodes,
                self.extra_models,
                list(zip(order, _rank_values(len(order)), strict=True)),
                [(r, 1.0, False) for r in self.live],
            )
            self.calls += 1
            tried.update(j.id for j in order)
            for j in order:
                if j.id in got:
                    self.started[j.id] = got[j.id]
                    self.live.append(Running(j, got[j.id], 0.0))
            self.waiting = [j for j in self.waiting if j.id not in got]
            if not got:
                break

    def reclaim(self) -> None:
        """Starved departments' jobs against preemptible jobs of departments above their fair
        share (KAI's MaintainFairShare / GuaranteeDeservedQuota strategies)."""
        states = _kai_states(self.queues, self.waiting, self.live, self.capacity)
        reclaimers = _kai_order(self.waiting, states, starved_only=True)
        victims_of: dict[str, float] = {}
        for name, s in states.items():
            if s.queue.parent is None and s.allocated > s.fair + 1e-9:
                victims_of[name] = s.allocated - s.fair
        if not reclaimers or not victims_of:
            return
        chosen = _reclaimers_within(reclaimers, states, victims_of)
        if not chosen:
            return
        got, ev = _engine_round(
            self.nodes,
            self.extra_models,
            [(j, _BIG + v) for j, v in zip(chosen, _rank_values(len(chosen)), strict=True)],
            self._victims(states, victims_of),
        )
        self.calls += 1
        self.started.update(got)
        self.evicted.extend(ev)

    def _victims(
        self, states: Mapping[str, _QueueState], victims_of: Mapping[str, float]
    ) -> list[tuple[Running, float, bool]]:
        """Every running job as an incumbent: preemptible if its department is above its fair
        share, it is preemptible work and it was not placed in this cycle; among victims, the
        newest job is cheapest (KAI evicts the most recent first)."""
        newest_first = sorted(self.live, key=lambda r: -r.start)
        rank = {r.job.id: k for k, r in enumerate(newest_first)}
        incs: list[tuple[Running, float, bool]] = []
        for r in self.live:
            dept = states[r.job.queue].queue.parent or r.job.queue
            may_go = (
                r.job.priority < KAI_NON_PREEMPTIBLE
                and dept in victims_of
                and r.job.id not in self.started  # not evicted in the cycle that placed it
            )
            incs.append((r, 1.0 + 1e-6 * (len(self.live) - rank[r.job.id]), may_go))
        return incs


def _reclaimers_within(
    reclaimers: Sequence[Job], states: Mapping[str, _QueueState], victims_of: Mapping[str, float]
) -> list[Job]:
    """Reclaimers in order while their GPU-equivalents fit in what the departments above their
    fair share hold beyond it; a department above its fair share reclaims from nobody."""
    budget = sum(victims_of.values())
    chosen: list[Job] = []
    for j in reclaimers:
        dept = states[j.queue].queue.parent or j.queue
        if dept in victims_of:
            continue
        if j.equivalents <= budget + 1e-9:
            chosen.append(j)
            budget -= j.equivalents
    return chosen
