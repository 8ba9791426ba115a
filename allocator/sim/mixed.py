"""The mixed-priority scenario: inference and research agents on a cut of the spot-gpu fleet.

A seeded synthetic workload (:func:`generate_workload`) of high-priority inference agents (MIG
slices, GPU shares and single GPUs; large wallets; minutes-long) and research agents (whole-GPU
gangs of 1-8 GPUs, some NVLink- or node-local; small wallets; long) arrives over time, one
Poisson process per agent, at an offered load of ``load`` x the fleet's GPU-equivalents. Each pod
is an XOR list of alternatives: its preferred unit and fallbacks of similar capacity on the other
pools (the auction bids them all, the baselines only the preferred one). Every
``round_seconds`` a round clears everything pending under one policy (:data:`MIXED_POLICIES`,
from the registry of :mod:`allocator.sim.policies`), all placing through the same engine:
``auction`` (the project's market: wallets, values, preemption of research work), ``fifo`` and
``kai`` (:mod:`allocator.sim.baselines`). A preempted
job returns to the pending set with its arrival time and remaining duration. The run records
per-class waits, GPU allocation over time, preemptions, welfare and decision time
(:class:`MixedRun`). Method and results: docs/simulator-mixed.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allocator.instances import extra_models_for, spot_gpu_nodes
from allocator.model import (
    CATALOG,
    Alternative,
    GpuModel,
    Incumbent,
    Node,
    Placement,
    Problem,
    Unit,
)
from allocator.sim.baselines import Decision
from allocator.sim.policies.registry import MixedPolicy, MixedSetup, get, names
from allocator.sim.progress import ProgressEvent
from allocator.sim.traces import data_dir
from allocator.solvers import SolveParams

__all__ = [
    "CLASSES",
    "DEFAULT_PARAMS",
    "DEFAULT_SPREAD",
    "MixedPod",
    "MixedRun",
    "Workload",
    "generate_workload",
    "run_mixed",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``MIXED_POLICIES``: the policy names of the mixed scenario, read from the registry
    (:mod:`allocator.sim.policies`) when asked, so that it lists registered ones too."""
    if name == "MIXED_POLICIES":
        return names("mixed")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CLASSES = ("inference", "research")

#: Share of each GPU pool's capacity offered to inference outside its peak (research gets the
#: rest of ``load``).
_INFERENCE_LOAD = {"mig": 0.4, "share": 0.35, "whole": 0.1}
#: MIG profiles inference asks for, with weights.
_PROFILES = (("1g.10gb", 4), ("2g.20gb", 3), ("3g.40gb", 2), ("7g.80gb", 1))
_SHARES = (250, 500, 500, 750)
#: Research gang shapes: replicas, GPUs per replica, locality, weight.
_GANGS = (
    (1, 1, "any", 35),
    (1, 2, "nvlink", 20),
    (1, 4, "nvlink", 15),
    (1, 8, "node", 15),
    (2, 4, "any", 10),
    (4, 1, "node", 5),
)
_INFERENCE_SECONDS = (120.0, 1200.0)  # log-uniform
_RESEARCH_SECONDS = (600.0, 7200.0)  # log-uniform
_INFERENCE_VALUE = 20.0  # per GPU-equivalent per round
_RESEARCH_VALUE = 1.0
_RESEARCH_PREEMPTION_COST = 0.5  # fraction of value lost on eviction
#: Fallback alternatives (XOR with the preferred unit) and their value as a fraction of the
#: preferred one's: a unit of similar capacity on the other fractional pool (a MIG profile's
#: compute share in milli-GPU, rounded up; a share's memory share of an 80 GB GPU as a MIG
#: profile, rounded up), one whole GPU (less efficient for a fraction), and for whole-GPU work a
#: 7g.80gb instance (same compute).
_MIG_TO_SHARE = {"1g.10gb": 150, "2g.20gb": 290, "3g.40gb": 430}
_SHARE_TO_MIG = {250: "2g.20gb", 500: "3g.40gb", 750: "7g.80gb"}
_FULL_MIG = "7g.80gb"
_SIMILAR_FALLBACK = 0.9  # MIG <-> share of similar capacity
_WHOLE_FALLBACK = 0.8  # a fraction served by a whole GPU
_SAME_COMPUTE_FALLBACK = 0.95  # whole GPU <-> 7g.80gb
#: Value factor of a multi-GPU research gang's topology-free alternative (its GPUs as single-GPU
#: replicas anywhere: data-parallel over the network instead of NVLink or one node).
DEFAULT_SPREAD = 0.7


@dataclass
class MixedPod:
    """One job (a gang): its XOR alternatives (the first preferred) with their GPU-equivalents,
    its class and agent, and what happened to it (``chosen``: the alternative it runs on, or
    last ran on; 0 while pending)."""

    id: str
    agent: str
    klass: str
    arrival: float
    duration: float
    alternatives: tuple[Alternative, ...]
    sizes: tuple[float, ...]  # GPU-equivalents of each alternative
    remaining: float = 0.0
    first_start: float | None = None
    start: float = 0.0
    end: float = 0.0
    placements: tuple[Placement, ...] = ()
    preemptions: int = 0
    state: str = "future"  # future, pending, running, departed
    chosen: int = 0

    @property
    def alternative(self) -> Alternative:
        """The alternative it runs on (the preferred one while pending)."""
        return self.alternatives[self.chosen]

    @property
    def equivalents(self) -> float:
        """GPU-equivalents of :attr:`alternative`."""
        return self.sizes[self.chosen]

    @property
    def value(self) -> float:
        """Value per round of running (the value of :attr:`alternative`)."""
        return self.alternative.value


@dataclass(frozen=True)
class Workload:
    """A generated workload: its pods (in arrival order) and agents (name -> class)."""

    pods: tuple[MixedPod, ...]
    agents: dict[str, str]
    offered: dict[str, float]  # class -> offered GPU-equivalents in steady state


@dataclass
class MixedRun:
    """What one run recorded. Per-round lists are indexed by round; times in seconds."""

    policy: str
    seed: int
    capacity: float
    round_seconds: float
    times: list[float] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)  # GPU-eq running + pending before the round
    allocated: list[float] = field(default_factory=list)  # GPU-eq running after the round
    welfare: list[float] = field(default_factory=list)  # sum of values of running work
    decision_seconds: list[float] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    pending_count: list[int] = field(default_factory=list)
    pods: list[MixedPod] = field(default_factory=list)
    verified_rounds: int = 0

    def record(
        self,
        now: float,
        demand: float,
        decision: Decision,
        running: Iterable[MixedPod],
        pending: int,
    ) -> None:
        """Append one round: its time, the demand it faced, what runs after it (GPU-equivalents
        and value), its decision's time and evictions, the pending count."""
        live = list(running)
        self.times.append(now)
        self.demand.append(demand)
        self.allocated.append(sum(p.equivalents for p in live))
        self.welfare.append(sum(p.value for p in live))
        self.decision_seconds.append(decision.seconds)
        self.preempted.append(len(decision.evicted))
        self.pending_count.append(pending)
        self.verified_rounds += int(decision.verified)

    def counts(self) -> dict[str, int]:
        """arrived, running, waiting, departed: each arrived pod is in exactly one of the last 3."""
        arrived = [p for p in self.pods if p.state != "future"]
        return {
            "arrived": len(arrived),
            "running": sum(p.state == "running" for p in arrived),
            "waiting": sum(p.state == "pending" for p in arrived),
            "departed": sum(p.state == "departed" for p in arrived),
        }

    def waits(self, klass: str) -> np.ndarray:
        """Waits (s) from arrival to first placement of arrived pods of ``klass``; a pod still
        waiting at the last round counts as waiting until then (censored: a lower bound)."""
        end = self.times[-1] if self.times else 0.0
        out = [
            (p.first_start if p.first_start is not None else end) - p.arrival
            for p in self.pods
            if p.klass == klass and p.state != "future"
        ]
        return np.asarray(out, dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Headline figures (JSON-ready)."""
        out: dict[str, Any] = {"policy": self.policy, "seed": self.seed, **self.counts()}
        for klass in CLASSES:
            w = self.waits(klass)
            censored = sum(
                p.klass == klass and p.state == "pending" and p.first_start is None
                for p in self.pods
            )
            for q in (50, 95, 99):
                out[f"{klass}_wait_p{q}"] = float(np.percentile(w, q)) if len(w) else 0.0
            out[f"{klass}_censored"] = int(censored)
            out[f"{klass}_preemptions"] = sum(p.preemptions for p in self.pods if p.klass == klass)
        alloc = np.asarray(self.allocated) / self.capacity
        over = np.asarray(self.demand) > self.capacity + 1e-9
        out["alloc_mean"] = float(alloc.mean()) if len(alloc) else 0.0
        out["over_rounds_share"] = float(over.mean()) if len(over) else 0.0
        out["alloc_over_min"] = float(alloc[over].min()) if over.any() else float("nan")
        out["alloc_over_mean"] = float(alloc[over].mean()) if over.any() else float("nan")
        out["preemptions"] = int(sum(self.preempted))
        out["welfare_mean"] = float(np.mean(self.welfare)) if self.welfare else 0.0
        out["decision_mean_s"] = float(np.mean(self.decision_seconds)) if self.times else 0.0
        out["decision_max_s"] = float(np.max(self.decision_seconds)) if self.times else 0.0
        out["verified_rounds"] = self.verified_rounds
        return out


def _equivalents(unit: Unit, replicas: int, compute_units: int = 7) -> float:
    if unit.kind == "whole":
        return float(unit.gpus * replicas)
    if unit.kind == "share":
        return unit.milli / 1000.0 * replicas
    compute = int((unit.profile or "1g").split("g", 1)[0])
    return compute / compute_units * replicas


def _sizes(alts: Sequence[Alternative], compute_units: int = 7) -> tuple[float, ...]:
    return tuple(_equivalents(a.unit, a.replicas, compute_units) for a in alts)


def _fallbacks(klass: str, unit: Unit) -> list[tuple[Unit, float]]:
    """The fallback units of a pod whose preferred unit is ``unit``, each with its value as a
    fraction of the preferred alternative's (see :data:`_MIG_TO_SHARE` and the factors)."""
    if klass == "research":
        # Training replicas of one GPU also run on a full MIG instance (same compute).
        if unit.kind == "whole" and unit.gpus == 1:
            return [(Unit("mig", profile=_FULL_MIG), _SAME_COMPUTE_FALLBACK)]
        return []
    if unit.kind == "whole":
        return [(Unit("mig", profile=_FULL_MIG), _SAME_COMPUTE_FALLBACK)]
    if unit.kind == "mig":
        if unit.profile == _FULL_MIG:
            return [(Unit("whole"), _SAME_COMPUTE_FALLBACK)]
        milli = _MIG_TO_SHARE[unit.profile or ""]
        return [(Unit("share", milli=milli), _SIMILAR_FALLBACK), (Unit("whole"), _WHOLE_FALLBACK)]
    profile = _SHARE_TO_MIG[unit.milli]
    return [(Unit("mig", profile=profile), _SIMILAR_FALLBACK), (Unit("whole"), _WHOLE_FALLBACK)]


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _mean_log_uniform(low: float, high: float) -> float:
    return (high - low) / math.log(high / low)


def generate_workload(
    nodes: Sequence[Node],
    seed: int,
    horizon: float,
    *,
    load: float = 1.3,
    inference_agents: int = 8,
    research_agents: int = 12,
    warm_start: bool = True,
    burst: float = 2.0,
    spread: float = DEFAULT_SPREAD,
) -> Workload:
    """A seeded workload for ``nodes`` over ``[0, horizon]`` seconds at offered ``load``.

    Inference is offered a fixed fraction of each pool it can use (MIG GPUs, shared GPUs, whole
    GPUs: 0.6, 0.5, 0.1 of its capacity); research the rest of ``load`` x all GPU-equivalents.
    Each agent is a Poisson process of its class's rate times a random weight. With
    ``warm_start`` the pods a steady state would hold arrive at time 0 with a uniform fraction of
    their duration left, so that the run starts loaded instead of empty. During the middle third
    of ``[0, horizon]`` inference arrives at ``burst`` x its rate (a traffic peak that the GPUs
    research holds must absorb). A research gang of more than one GPU in all also bids its GPUs
    as single-GPU replicas anywhere at ``spread`` x its value (0: strict locality, no such
    alternative); the random draws do not depend on ``spread``.
    """
    rng = random.Random(seed)
    pools = _pools(nodes)
    capacity = float(sum(pools.values()))
    inf_rates = _inference_rates(pools)
    inf_offered = sum(_INFERENCE_LOAD[k] * pools[k] for k in pools)
    res_offered = max(load * capacity - inf_offered, 0.0)
    gang_mean = sum(r * g * w for r, g, _, w in _GANGS) / sum(w for *_, w in _GANGS)
    res_rate = res_offered / (gang_mean * _mean_log_uniform(*_RESEARCH_SECONDS))
    agents: dict[str, str] = {}
    streams: list[tuple[str, str, float]] = []  # agent, class, rate
    for klass, count, total in (
        ("inference", inference_agents, sum(inf_rates.values())),
        ("research", research_agents, res_rate),
    ):
        weights = [rng.uniform(0.5, 1.5) for _ in range(count)]
        for a, w in enumerate(weights):
            name = f"{klass[:3]}{a}"
            agents[name] = klass
            streams.append((name, klass, total * w / sum(weights)))
    draw = _Draw(rng, inf_rates, spread)
    pods = _warm_pods(rng, streams, draw) if warm_start else []
    pods += _arrivals(rng, streams, draw, horizon, burst)
    pods.sort(key=lambda p: (p.arrival, p.agent))
    for i, p in enumerate(pods):
        p.id = f"j{i}"
    return Workload(tuple(pods), agents, {"inference": inf_offered, "research": res_offered})


def _pools(nodes: Sequence[Node]) -> dict[str, int]:
    """GPUs of each pool: MIG-partitioned, shared, whole."""
    pools = {"mig": 0, "share": 0, "whole": 0}
    for n in nodes:
        for g in n.gpus:
            pools[{"mig": "mig", "shared": "share", "whole": "whole"}[g.mode]] += 1
    return pools


def _inference_rates(pools: dict[str, int]) -> dict[str, float]:
    """Inference arrival rates (pods/s) per pool: its offered GPU-equivalents there over the
    mean pod size and duration."""
    inf_mean_s = _mean_log_uniform(*_INFERENCE_SECONDS)
    mig_mean = sum(_equivalents(Unit("mig", profile=p), 1) * w for p, w in _PROFILES) / sum(
        w for _, w in _PROFILES
    )
    share_mean = sum(_SHARES) / len(_SHARES) / 1000.0
    return {
        "mig": _INFERENCE_LOAD["mig"] * pools["mig"] / (mig_mean * inf_mean_s),
        "share": _INFERENCE_LOAD["share"] * pools["share"] / (share_mean * inf_mean_s),
        "whole": _INFERENCE_LOAD["whole"] * pools["whole"] / (1.0 * inf_mean_s),
    }


class _Draw:
    """Draws one pod of a class: its alternatives, their sizes and its duration."""

    def __init__(self, rng: random.Random, inf_rates: dict[str, float], spread: float) -> None:
        self.rng = rng
        self.spread = spread
        self.inf_kinds = [k for k in ("mig", "share", "whole") if inf_rates[k] > 0]
        self.inf_weights = [inf_rates[k] for k in self.inf_kinds]

    def __call__(self, klass: str) -> tuple[tuple[Alternative, ...], tuple[float, ...], float]:
        rng = self.rng
        if klass == "inference":
            unit = self._inference_unit()
            replicas, locality = 1, "any"
            level = _INFERENCE_VALUE * math.exp(rng.gauss(0.0, 0.3))
            duration = _log_uniform(rng, *_INFERENCE_SECONDS)
        else:
            replicas, gpus, locality, _ = rng.choices(_GANGS, [w for *_, w in _GANGS])[0]
            unit = Unit("whole", gpus=gpus)
            level = _RESEARCH_VALUE * math.exp(rng.gauss(0.0, 0.5))
            duration = _log_uniform(rng, *_RESEARCH_SECONDS)
        value = level * _equivalents(unit, replicas)
        units = [(unit, 1.0), *_fallbacks(klass, unit)]
        alts = tuple(
            Alternative(round(value * f, 4), u, replicas=replicas, locality=locality)
            for u, f in units
        )
        if klass == "research" and self.spread > 0 and unit.gpus * replicas > 1:
            spread_value = round(value * self.spread, 4)
            alts += (Alternative(spread_value, Unit("whole"), replicas=unit.gpus * replicas),)
        return alts, _sizes(alts), duration

    def _inference_unit(self) -> Unit:
        rng = self.rng
        kind = rng.choices(self.inf_kinds, weights=self.inf_weights)[0]
        if kind == "mig":
            profile = rng.choices([p for p, _ in _PROFILES], [w for _, w in _PROFILES])[0]
            return Unit("mig", profile=profile)
        if kind == "share":
            return Unit("share", milli=rng.choice(_SHARES))
        return Unit("whole", gpus=1)


def _warm_pods(
    rng: random.Random, streams: Sequence[tuple[str, str, float]], draw: _Draw
) -> list[MixedPod]:
    """The pods a steady state would hold, arrived at time 0 with part of their duration left."""
    pods: list[MixedPod] = []
    for name, klass, rate in streams:
        mean_s = _mean_log_uniform(
            *(_INFERENCE_SECONDS if klass == "inference" else _RESEARCH_SECONDS)
        )
        for _ in range(int(np.random.default_rng(rng.getrandbits(32)).poisson(rate * mean_s))):
            alts, sizes, duration = draw(klass)
            left = max(duration * rng.random(), 1.0)
            pods.append(MixedPod("", name, klass, 0.0, left, alts, sizes, remaining=left))
    return pods


def _arrivals(
    rng: random.Random,
    streams: Sequence[tuple[str, str, float]],
    draw: _Draw,
    horizon: float,
    burst: float,
) -> list[MixedPod]:
    """Each agent's Poisson arrivals over ``[0, horizon]``, inference at ``burst`` x its rate in
    the middle third."""
    pods: list[MixedPod] = []
    peak = (horizon / 3.0, 2.0 * horizon / 3.0)
    for name, klass, rate in streams:
        # Thinning: candidate arrivals at the peak rate, kept with probability rate(t) / peak.
        top = rate * max(burst, 1.0) if klass == "inference" else rate
        t = 0.0
        while top > 0:
            t += rng.expovariate(top)
            if t > horizon:
                break
            now = rate * burst if klass == "inference" and peak[0] <= t < peak[1] else rate
            if rng.random() * top >= now:
                continue
            alts, sizes, duration = draw(klass)
            pods.append(MixedPod("", name, klass, t, duration, alts, sizes, remaining=duration))
    return pods


#: The mixed scenario's solve options unless told otherwise: the auction's greedy (with
#: ``solver="local"``, 0.2 s of local search per round).
DEFAULT_PARAMS = SolveParams(solver="greedy", time_limit=0.2)


def run_mixed(
    policy: str,
    *,
    seed: int,
    gpus: int = 512,
    rounds: int = 60,
    round_seconds: float = 60.0,
    load: float = 1.3,
    nodes_path: str | Path | None = None,
    params: SolveParams | None = None,
    solver: str | None = None,
    time_limit: float | None = None,
    verify: bool = False,
    spread: float = DEFAULT_SPREAD,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> MixedRun:
    """Simulate ``rounds`` rounds of the mixed-priority scenario under ``policy``.

    Parameters
    ----------
    policy
        A policy of the mixed scenario (:data:`MIXED_POLICIES`: ``auction``, ``fifo``, ``kai``
        and any registered in :mod:`allocator.sim.policies`).
    seed
        Seeds the workload (identical across policies for one seed) and local search.
    gpus
        The cut of the spot-gpu node list (first nodes in file order up to this many GPUs).
    rounds, round_seconds
        Rounds clear at ``0, round_seconds, ...``; pods arrive over ``[0, last round]``.
    load
        Offered GPU-equivalents over capacity (inference + research), warm-started.
    nodes_path
        The spot-gpu ``node_info_df.csv`` (default: ``shared/data/spot-gpu`` beside the project).
    params
        The solve options of the auction (default :data:`DEFAULT_PARAMS`: greedy; ``solver``
        greedy or local, ``time_limit`` per round, ``alpha``, ``seed`` added to the run's);
        ``fifo`` and ``kai`` place through the engine their own fixed way.
    solver, time_limit
        Shortcuts overriding those fields of ``params``.
    verify
        Check every auction round with the independent :func:`allocator.verify.check_or_raise`,
        and every round's running set against the model's occupancy rules (all policies).
    spread
        Value factor of the topology-free alternative of multi-GPU research gangs
        (:func:`generate_workload`); default :data:`DEFAULT_SPREAD`, 0 leaves it out (strict
        locality). Only the auction sees it.
    progress
        Called after every round with a :class:`~allocator.sim.progress.ProgressEvent`
        (rounds done of ``rounds``).
    """
    entry = get(policy, "mixed")
    _check_run(rounds, round_seconds, load, spread)
    chosen = _with_shortcuts(params or DEFAULT_PARAMS, solver=solver, time_limit=time_limit)
    nodes = spot_gpu_nodes(nodes_path or data_dir() / "spot-gpu" / "node_info_df.csv", gpus)
    extra = extra_models_for(nodes)
    capacity = float(sum(len(n.gpus) for n in nodes))
    workload = generate_workload(
        nodes, seed, (rounds - 1) * round_seconds, load=load, spread=spread
    )
    pods = [_copy(p) for p in workload.pods]
    mig_compute = _mig_compute(nodes, extra)
    for p in pods:
        p.sizes = _sizes(p.alternatives, mig_compute)
    setup = MixedSetup(workload, nodes, extra, capacity, chosen, seed, verify)
    decide: MixedPolicy = entry.factory(setup)
    run = MixedRun(policy, seed, capacity, round_seconds, pods=pods)
    jobs = _Jobs(pods)
    for k in range(rounds):
        now = k * round_seconds
        demand = jobs.advance(now)
        decision = decide(nodes, extra, jobs.pending_in_order(), jobs.live(), k)
        jobs.apply(decision, now)
        if verify:
            _check_running(nodes, extra, jobs.running.values())
        run.record(now, demand, decision, jobs.running.values(), len(jobs.pending))
        if progress is not None:
            progress(ProgressEvent(k + 1, rounds, "rounds", f"{policy} seed {seed}"))
    return run


def _check_run(rounds: int, round_seconds: float, load: float, spread: float) -> None:
    if rounds < 1:
        raise ValueError(f"rounds: must be >= 1, got {rounds}")
    if not round_seconds > 0:
        raise ValueError(f"round_seconds: must be > 0, got {round_seconds}")
    if not load > 0:
        raise ValueError(f"load: must be > 0, got {load}")
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread: must be in [0, 1], got {spread}")


def _with_shortcuts(params: SolveParams, **given: Any) -> SolveParams:
    """``params`` with the keyword shortcuts that were given (not None) applied."""
    changes = {k: v for k, v in given.items() if v is not None}
    return params.replace(**changes) if changes else params


class _Jobs:
    """Where every job of a run is: pending or running (by id, in the order they got there)."""

    def __init__(self, pods: Sequence[MixedPod]) -> None:
        self.pods = pods
        self.by_id = {p.id: p for p in pods}
        self.pending: dict[str, MixedPod] = {}
        self.running: dict[str, MixedPod] = {}
        self.next = 0

    def advance(self, now: float) -> float:
        """Departures and arrivals up to ``now``; returns the demand (GPU-equivalents running
        and pending) the round faces."""
        for p in list(self.running.values()):
            if p.end <= now + 1e-9:
                p.state = "departed"
                p.placements = ()
                del self.running[p.id]
        pods = self.pods
        while self.next < len(pods) and pods[self.next].arrival <= now + 1e-9:
            pods[self.next].state = "pending"
            self.pending[pods[self.next].id] = pods[self.next]
            self.next += 1
        return sum(p.equivalents for p in self.running.values()) + sum(
            p.equivalents for p in self.pending.values()
        )

    def pending_in_order(self) -> list[MixedPod]:
        """Pending jobs by arrival (then id)."""
        return sorted(self.pending.values(), key=lambda p: (p.arrival, p.id))

    def live(self) -> list[MixedPod]:
        """Running jobs."""
        return list(self.running.values())

    def apply(self, decision: Decision, now: float) -> None:
        """Evicted jobs go back to pending (with what is left of their duration), started ones
        run from ``now`` on the alternative they won."""
        for pid in decision.evicted:
            p = self.by_id[pid]
            p.remaining = max(p.end - now, 0.0)
            p.preemptions += 1
            p.placements = ()
            p.chosen = 0  # pending again: it may come back on any alternative
            p.state = "pending"
            del self.running[pid]
            self.pending[pid] = p
        for pid, reps in decision.started.items():
            p = self.by_id[pid]
            if p.first_start is None:
                p.first_start = now
            p.start = now
            p.end = now + p.remaining
            p.placements = tuple(reps)
            p.chosen = decision.chosen.get(pid, 0)
            p.state = "running"
            del self.pending[pid]
            self.running[pid] = p


def _copy(p: MixedPod) -> MixedPod:
    return MixedPod(
        p.id, p.agent, p.klass, p.arrival, p.duration, p.alternatives, p.sizes, p.remaining
    )


def _mig_compute(nodes: Sequence[Node], extra: tuple[GpuModel, ...]) -> int:
    """Compute slices of the fleet's MIG GPUs (7 on every model the spot-gpu fleet has)."""
    for n in nodes:
        for g in n.gpus:
            if g.mode == "mig":
                return CATALOG[g.model].compute_units
    return 7


def _check_running(
    nodes: tuple[Node, ...], extra: tuple[GpuModel, ...], running: Sequence[MixedPod] | Any
) -> None:
    """The model's own validation of what runs: a Problem whose incumbents are the running pods
    raises ProblemError if any GPU is over-allocated (whole, shares, MIG slices)."""
    Problem(
        nodes=nodes,
        incumbents=tuple(
            Incumbent(p.id, p.agent, value=p.value, placements=p.placements) for p in running
        ),
        extra_models=extra,
    )
