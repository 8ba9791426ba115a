"""The ``mig-day`` scenario: dynamic MIG on the spot-gpu fleet's MIG-capable GPUs over one day.

The fleet is the A100-SXM4-80GB, A800-SXM4-80GB and H800 nodes of the spot-gpu node list
(:func:`mig_fleet`: an evenly spaced, deterministic sample of ``nodes`` of them, or all 673),
every GPU in MIG mode. A seeded synthetic workload (:func:`generate_mig_day`) shifts between
MIG profiles over the day: inference asks for 1g/2g slices and peaks in the afternoon, training
asks for whole GPUs (7g) or halves (4g, 3g) and peaks at night. Every ``round_seconds`` a round
builds a :class:`~allocator.model.Problem` of the fleet, each GPU with the MIG layout it has
now, running pods as (non-preemptible) incumbents on their instances and waiting pods as bids
for their profile, and calls :func:`allocator.solvers.solve`. A policy of the registry
(:mod:`allocator.sim.policies`, scenario ``mig-day``) decides the layouts: ``fixed-*`` keep
theirs all day, ``planned`` lets the engine re-carve idle GPUs when that pays
(``Problem.reconfigure_cost``).

The simulator owns time: a re-carved GPU is unavailable for ``recarve_delay`` seconds (pods
placed on it start after that), and a GPU whose layout changed may not change again for
``hold_seconds``. A waiting pod leaves after its class's patience. Method, assumptions and
results: docs/simulator-mig.md.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    ProblemError,
    Unit,
    Wallet,
)
from allocator.sim.policies.registry import MigDayPolicy, MigDaySetup, get, names
from allocator.sim.progress import ProgressEvent
from allocator.sim.traces import data_dir
from allocator.solvers import SolveParams, solve

__all__ = [
    "CLASSES",
    "DEFAULT_PARAMS",
    "LAYOUTS",
    "MIG_MODELS",
    "LayoutChange",
    "MigDayConfig",
    "MigDayRun",
    "MigDayWorkload",
    "MigGpu",
    "MigPlan",
    "MigPod",
    "MigView",
    "PodClass",
    "generate_mig_day",
    "layout_equivalents",
    "mig_fleet",
    "profile_equivalents",
    "run_mig_day",
    "simulate_policy",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``MIG_DAY_POLICIES``: the scenario's policy names, read from the registry when asked."""
    if name == "MIG_DAY_POLICIES":
        return names("mig-day")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The spot-gpu models the scenario takes (all with the 80 GB MIG geometry: 7 compute and 8
#: memory slices, profiles 1g.10gb ... 7g.80gb).
MIG_MODELS = ("A100-SXM4-80GB", "A800-SXM4-80GB", "H800")
#: Nodes of the default sample (8 GPUs each).
DEFAULT_NODES = 8
DAY_SECONDS = 86_400.0


def _layout(*instances: tuple[str, int]) -> tuple[MigInstance, ...]:
    return tuple(MigInstance(p, s) for p, s in instances)


#: Named per-GPU layouts of the 80 GB models (profile, start slot). ``balanced`` is NVIDIA's
#: ``all-balanced`` shape for the A100-80GB in mig-parted's default configuration (2 x 1g.10gb,
#: 1 x 2g.20gb, 1 x 3g.40gb). Every layout but ``all-1g`` leaves no compute slice idle;
#: ``all-1g`` leaves memory slice 7 empty (no 1g instance can start there).
LAYOUTS: Mapping[str, tuple[MigInstance, ...]] = {
    "all-1g": _layout(*(("1g.10gb", s) for s in range(7))),
    "mostly-2g": _layout(("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4), ("1g.10gb", 6)),
    "balanced": _layout(("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 4)),
    "4g-3g": _layout(("4g.40gb", 0), ("3g.40gb", 4)),
    "all-7g": _layout(("7g.80gb", 0)),
}


def profile_equivalents(profile: str, model: str = "A100-SXM4-80GB") -> float:
    """GPU-equivalents of one instance of ``profile``: its compute slices over the GPU's."""
    m = CATALOG[model]
    p = m.profile(profile)
    if p is None:
        raise ProblemError("profile", f"{model} has no MIG profile {profile!r}")
    return p.compute / m.compute_units


def layout_equivalents(layout: Sequence[MigInstance], model: str = "A100-SXM4-80GB") -> float:
    """GPU-equivalents of a layout's instances (1.0 when every compute slice is carved)."""
    return sum(profile_equivalents(i.profile, model) for i in layout)


def mig_fleet(
    path: str | Path | None = None, nodes: int | None = DEFAULT_NODES
) -> tuple[Node, ...]:
    """The MIG-capable nodes of the spot-gpu node list, every GPU in MIG mode.

    ``nodes``: how many, evenly spaced over the list in file order (row ``floor(i * N /
    nodes)`` of the N MIG-capable rows, i = 0 .. nodes-1), so that the sample keeps the fleet's
    mix of models; None (or N or more): all of them (673 nodes, 5,384 GPUs). Each 8-GPU node
    has two NVLink domains of four, memory is 8 GiB per CPU (the file has no memory).
    """
    file = Path(path) if path is not None else data_dir() / "spot-gpu" / "node_info_df.csv"
    try:
        with file.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("gpu_model") in MIG_MODELS]
    except OSError as e:
        raise ProblemError("nodes", f"cannot read {file}: {e.strerror}") from None
    if nodes is not None and nodes < 1:
        raise ValueError(f"nodes: must be >= 1, got {nodes}")
    if nodes is not None and nodes < len(rows):
        rows = [rows[i * len(rows) // nodes] for i in range(nodes)]
    out = []
    for row in rows:
        count, cpus = int(row["gpu_capacity_num"]), int(row["cpu_num"])
        out.append(
            Node(
                name=f"spot-{row['node_name']}",
                cpu_milli=cpus * 1000,
                memory_mib=cpus * 8 * 1024,
                gpus=tuple(
                    Gpu(k, row["gpu_model"], "mig", nvlink=f"nv{k // 4}" if count == 8 else None)
                    for k in range(count)
                ),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class PodClass:
    """A class of pods: the MIG profiles it asks for (with weights), its duration range
    (log-uniform, seconds), its median value per GPU-equivalent-hour and its patience (seconds
    a pod waits before it leaves)."""

    name: str
    profiles: tuple[tuple[str, float], ...]
    seconds: tuple[float, float]
    value: float
    patience: float

    def mean_equivalents(self) -> float:
        """Mean GPU-equivalents of one pod."""
        total = sum(w for _, w in self.profiles)
        return sum(profile_equivalents(p) * w for p, w in self.profiles) / total

    def mean_seconds(self) -> float:
        """Mean duration (of the log-uniform range)."""
        low, high = self.seconds
        return (high - low) / math.log(high / low)


#: Inference: 1g/2g slices, 5-60 min, worth 1.5 per GPU-equivalent-hour, leaves after 10 min.
INFERENCE = PodClass("inference", (("1g.10gb", 0.6), ("2g.20gb", 0.4)), (300.0, 3600.0), 1.5, 600.0)
#: Training: a whole GPU (7g.80gb) or a half (4g.40gb, 3g.40gb), 30 min - 4 h, worth 1.0 per
#: GPU-equivalent-hour, leaves after 2 h.
TRAINING = PodClass(
    "training",
    (("7g.80gb", 0.6), ("4g.40gb", 0.2), ("3g.40gb", 0.2)),
    (1800.0, 14_400.0),
    1.0,
    7200.0,
)
CLASSES = (INFERENCE, TRAINING)
#: Spread (sigma of a lognormal factor) of a pod's value around its class's median.
VALUE_SIGMA = 0.25


@dataclass
class MigPod:
    """One pod: a single MIG instance of ``profile`` for ``duration`` seconds, worth
    ``value_rate`` per GPU-equivalent-hour of running; and what happened to it."""

    id: str
    klass: str
    profile: str
    equivalents: float
    value_rate: float
    arrival: float
    duration: float
    patience: float
    #: future, pending, running (placed; it starts at ``start``), done, abandoned.
    state: str = "future"
    gpu: int = -1
    slot: int = -1
    placed: float = math.nan
    start: float = math.nan
    end: float = math.nan

    @property
    def value(self) -> float:
        """Value per hour of running (what it bids, and what an incumbent is worth)."""
        return self.value_rate * self.equivalents

    def fresh(self) -> MigPod:
        """A copy before anything happened to it (runs never share pod objects)."""
        return replace(
            self, state="future", gpu=-1, slot=-1, placed=math.nan, start=math.nan, end=math.nan
        )


@dataclass(frozen=True)
class MigDayWorkload:
    """A generated day: pods in arrival order and how the offered load was shaped."""

    pods: tuple[MigPod, ...]
    gpus: int
    day_seconds: float
    load: float
    inference_low: float
    inference_high: float
    peak_hour: float

    def inference_share(self, t: float | np.ndarray) -> Any:
        """Inference's share of the offered GPU-equivalents at time ``t`` (seconds)."""
        return _share(t, self.inference_low, self.inference_high, self.peak_hour)

    def offered(self, times: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """GPU-equivalents of each profile that would run at each of ``times`` if every pod
        started on arrival (the demand, independent of any policy)."""
        t = np.asarray(times, dtype=np.float64)
        out = {p: np.zeros(len(t)) for c in CLASSES for p, _ in c.profiles}
        for pod in self.pods:
            live = (t >= pod.arrival) & (t < pod.arrival + pod.duration)
            out[pod.profile][live] += pod.equivalents
        return out


def _share(t: Any, low: float, high: float, peak_hour: float) -> Any:
    """Inference's share at ``t``: a raised cosine of period 24 h, ``high`` at ``peak_hour``."""
    phase = 2.0 * np.pi * (np.asarray(t) - peak_hour * 3600.0) / DAY_SECONDS
    return low + (high - low) * (1.0 + np.cos(phase)) / 2.0


def generate_mig_day(
    gpus: int,
    seed: int,
    *,
    day_seconds: float = DAY_SECONDS,
    load: float = 1.2,
    inference_low: float = 0.1,
    inference_high: float = 0.9,
    peak_hour: float = 14.0,
    warm_start: bool = True,
) -> MigDayWorkload:
    """A seeded day of MIG demand for a fleet of ``gpus`` GPUs.

    The offered load is ``load`` x ``gpus`` GPU-equivalents at every moment; inference's share
    of it follows a raised cosine of period 24 h from ``inference_low`` (at ``peak_hour`` - 12
    h) to ``inference_high`` (at ``peak_hour``, in hours after the run's start at midnight;
    ``day_seconds`` may be shorter or longer than a day), training has the rest. Each class
    arrives as a non-homogeneous Poisson process whose rate is its offered GPU-equivalents over
    its mean pod size and duration (drawn by thinning); a pod's profile, duration
    (log-uniform) and value (its class's median x lognormal(0, :data:`VALUE_SIGMA`), per
    GPU-equivalent-hour) are drawn on arrival. With ``warm_start`` the pods the offered load
    holds at time 0 arrive at 0 with a uniform fraction of their duration left. Everything is
    synthetic: only the fleet comes from the trace.
    """
    if gpus < 1:
        raise ValueError(f"gpus: must be >= 1, got {gpus}")
    if not 0.0 <= inference_low <= inference_high <= 1.0:
        raise ValueError("inference_low, inference_high: need 0 <= low <= high <= 1")
    if not load > 0 or not day_seconds > 0:
        raise ValueError("load and day_seconds must be > 0")
    rng = random.Random(seed)
    offered = load * gpus

    def share(klass: PodClass, t: float) -> float:
        s = float(_share(t, inference_low, inference_high, peak_hour))
        return s if klass is INFERENCE else 1.0 - s

    pods: list[MigPod] = []
    for klass in CLASSES:
        rate = offered / (klass.mean_equivalents() * klass.mean_seconds())  # at share 1
        if warm_start:
            count = np.random.default_rng(rng.getrandbits(32)).poisson(
                rate * share(klass, 0.0) * klass.mean_seconds()
            )
            for _ in range(int(count)):
                pod = _draw(rng, klass, 0.0)
                pod.duration = max(pod.duration * rng.random(), 1.0)
                pods.append(pod)
        top = rate * (inference_high if klass is INFERENCE else 1.0 - inference_low)
        t = 0.0
        while top > 0:
            t += rng.expovariate(top)
            if t >= day_seconds:
                break
            if rng.random() * top < rate * share(klass, t):
                pods.append(_draw(rng, klass, t))
    pods.sort(key=lambda p: (p.arrival, p.klass))
    for i, p in enumerate(pods):
        p.id = f"p{i}"
    return MigDayWorkload(
        tuple(pods), gpus, day_seconds, load, inference_low, inference_high, peak_hour
    )


def _draw(rng: random.Random, klass: PodClass, t: float) -> MigPod:
    profile = rng.choices([p for p, _ in klass.profiles], [w for _, w in klass.profiles])[0]
    low, high = klass.seconds
    duration = math.exp(rng.uniform(math.log(low), math.log(high)))
    value = klass.value * math.exp(rng.gauss(0.0, VALUE_SIGMA))
    return MigPod(
        "",
        klass.name,
        profile,
        profile_equivalents(profile),
        round(value, 6),
        t,
        duration,
        klass.patience,
    )


# ---------------------------------------------------------------------------------- rounds


@dataclass(frozen=True)
class MigDayConfig:
    """The scenario's knobs (one run's, all policies alike)."""

    #: Nodes of the fleet sample (:func:`mig_fleet`); None: the whole MIG-capable fleet.
    nodes: int | None = DEFAULT_NODES
    #: The spot-gpu ``node_info_df.csv`` (default: ``shared/data/spot-gpu`` beside the project).
    nodes_path: str | None = None
    day_seconds: float = DAY_SECONDS
    #: A round every this many simulated seconds.
    round_seconds: float = 60.0
    #: Offered GPU-equivalents over the fleet's (:func:`generate_mig_day`).
    load: float = 1.2
    inference_low: float = 0.1
    inference_high: float = 0.9
    #: Seconds a re-carved GPU is unavailable: pods placed on it start that much later.
    recarve_delay: float = 60.0
    #: Seconds a GPU keeps a new layout before it may be re-carved again.
    hold_seconds: float = 1800.0
    #: Welfare (value per hour of running work) one re-carved GPU costs the engine.
    reconfigure_cost: float = 0.3
    #: The day ``fixed-best`` searches its mix on (None: the run's own day, in-sample).
    search_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("day_seconds", "round_seconds", "load"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("recarve_delay", "hold_seconds", "reconfigure_cost"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.nodes is not None and self.nodes < 1:
            raise ValueError(f"nodes: must be >= 1 or None (all), got {self.nodes}")

    @property
    def rounds(self) -> int:
        """Rounds of the day, at 0, round_seconds, ... (the last before day_seconds)."""
        return max(1, math.ceil(self.day_seconds / self.round_seconds - 1e-9))


@dataclass(frozen=True)
class MigGpu:
    """A GPU of the fleet: its node, device index and model."""

    node: str
    index: int
    model: str
    nvlink: str | None


@dataclass
class MigView:
    """What a policy sees before a round (read it, never change it): per fleet GPU (in fleet
    order) its layout, the pods on its instances (start slot -> pod id), when its layout last
    changed and when it is ready (re-carved GPUs: ``recarve_delay`` after the change); the
    waiting pods (by arrival) and the placed ones."""

    now: float
    index: int
    gpus: tuple[MigGpu, ...]
    layouts: list[tuple[MigInstance, ...]]
    occupied: list[dict[int, str]]
    changed_at: list[float]
    ready_at: list[float]
    pending: list[MigPod]
    running: list[MigPod]
    config: MigDayConfig

    def held(self, g: int) -> bool:
        """Whether GPU ``g`` is within its hold time (or still being re-carved)."""
        return (
            self.now < self.changed_at[g] + self.config.hold_seconds or self.now < self.ready_at[g]
        )

    def free_instances(self, g: int) -> list[MigInstance]:
        """The instances of GPU ``g``'s layout no pod holds."""
        return [i for i in self.layouts[g] if i.start not in self.occupied[g]]


@dataclass(frozen=True)
class MigPlan:
    """A policy's round: GPUs the engine may re-carve (``recarvable``; the simulator grants it
    only past the hold time), free instances not offered this round (``hidden``: GPU -> start
    slots, e.g. a GPU being drained) and the welfare one re-carving costs."""

    recarvable: frozenset[int] = frozenset()
    hidden: Mapping[int, frozenset[int]] = field(default_factory=dict)
    reconfigure_cost: float = 0.0


@dataclass(frozen=True)
class LayoutChange:
    """One re-carving: when, which GPU (fleet index), its layout before and after."""

    time: float
    gpu: int
    before: tuple[MigInstance, ...]
    after: tuple[MigInstance, ...]


@dataclass
class MigDayRun:
    """What one run recorded: per-round series (indexed by round), the pods, the re-carvings.

    GPU-equivalents: a MIG instance counts its compute slices / 7; the fleet has one per GPU.
    ``allocated`` counts pods that have started (a pod placed on a GPU being re-carved counts
    from its start).
    """

    policy: str
    seed: int
    gpus: int
    config: MigDayConfig
    times: list[float] = field(default_factory=list)
    allocated: list[float] = field(default_factory=list)
    allocated_by_profile: dict[str, list[float]] = field(default_factory=dict)
    demand_by_profile: dict[str, list[float]] = field(default_factory=dict)
    value_rate: list[float] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    reconfigs: list[int] = field(default_factory=list)
    decision_seconds: list[float] = field(default_factory=list)
    solver_calls: int = 0
    changes: list[LayoutChange] = field(default_factory=list)
    initial_layouts: list[tuple[MigInstance, ...]] = field(default_factory=list)
    final_layouts: list[tuple[MigInstance, ...]] = field(default_factory=list)
    pods: list[MigPod] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def waits(self, klass: str) -> np.ndarray:
        """Seconds from arrival to start of the pods of ``klass`` that started."""
        return np.asarray(
            [p.start - p.arrival for p in self.pods if p.klass == klass and p.placed == p.placed],
            dtype=np.float64,
        )

    def summary(self) -> dict[str, Any]:
        """Headline figures (JSON-ready); percentages of the fleet's GPU-equivalents."""
        hours = len(self.times) * self.config.round_seconds / 3600.0
        alloc = np.asarray(self.allocated) / self.gpus * 100.0
        demand = sum(np.asarray(v) for v in self.demand_by_profile.values())
        out: dict[str, Any] = {
            "policy": self.policy,
            "seed": self.seed,
            "gpus": self.gpus,
            "alloc_gpu_eq_mean": float(alloc.mean()) if len(alloc) else 0.0,
            "alloc_gpu_eq_min": float(alloc.min()) if len(alloc) else 0.0,
            "demand_gpu_eq_mean": float(np.mean(demand) / self.gpus * 100.0) if len(alloc) else 0.0,
            "reconfigs": len(self.changes),
            "reconfigs_per_gpu_hour": len(self.changes) / (self.gpus * hours) if hours else 0.0,
            "reconfigs_max_per_gpu": max(
                (sum(c.gpu == g for c in self.changes) for g in range(self.gpus)), default=0
            ),
            "value_per_hour_mean": float(np.mean(self.value_rate)) if self.value_rate else 0.0,
        }
        for klass in CLASSES:
            mine = [p for p in self.pods if p.klass == klass.name and p.state != "future"]
            waits = self.waits(klass.name)
            out[f"{klass.name}_arrived"] = len(mine)
            out[f"{klass.name}_started"] = len(waits)
            out[f"{klass.name}_completed"] = sum(p.state == "done" for p in mine)
            out[f"{klass.name}_abandoned"] = sum(p.state == "abandoned" for p in mine)
            out[f"{klass.name}_wait_p50_s"] = float(np.percentile(waits, 50)) if len(waits) else 0.0
            out[f"{klass.name}_wait_p95_s"] = float(np.percentile(waits, 95)) if len(waits) else 0.0
            alloc_class = sum(np.asarray(self.allocated_by_profile[p]) for p, _ in klass.profiles)
            out[f"{klass.name}_alloc_gpu_eq_mean"] = float(np.mean(alloc_class) / self.gpus * 100)
        out["solver_calls"] = self.solver_calls
        out["decision_mean_s"] = float(np.mean(self.decision_seconds)) if self.times else 0.0
        out["decision_max_s"] = float(np.max(self.decision_seconds)) if self.times else 0.0
        return out


#: The scenario's solve options unless told otherwise: the engine's greedy, first-price (the
#: simulator needs the allocation and the layouts, not prices).
DEFAULT_PARAMS = SolveParams(solver="greedy", payments="first-price")
_WALLET = "fleet"


def run_mig_day(
    policy: str,
    *,
    seed: int,
    config: MigDayConfig | None = None,
    params: SolveParams | None = None,
    workload: MigDayWorkload | None = None,
    verify: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> MigDayRun:
    """Simulate one day of the ``mig-day`` scenario under ``policy`` (a name of the registry's
    ``mig-day`` scenario: ``fixed-all-1g``, ``fixed-balanced``, ``fixed-all-7g``, ``fixed-best``,
    ``planned``, ...).

    ``seed`` seeds the workload (the same day for every policy) unless ``workload`` is given;
    ``params`` are the engine's options (default :data:`DEFAULT_PARAMS`; round ``k`` uses seed
    ``seed + params.seed + k``). ``verify``: check every solved round with the independent
    :func:`allocator.verify.check_or_raise`. ``progress`` gets a
    :class:`~allocator.sim.progress.ProgressEvent` after every round.
    """
    cfg = config or MigDayConfig()
    entry = get(policy, "mig-day")
    nodes = mig_fleet(cfg.nodes_path, cfg.nodes)
    gpus = sum(len(n.gpus) for n in nodes)
    day = workload or generate_mig_day(
        gpus,
        seed,
        day_seconds=cfg.day_seconds,
        load=cfg.load,
        inference_low=cfg.inference_low,
        inference_high=cfg.inference_high,
    )
    setup = MigDaySetup(cfg, day, nodes, params or DEFAULT_PARAMS, seed, verify, progress)
    decide: MigDayPolicy = entry.factory(setup)
    return simulate_policy(setup, decide, policy)


def simulate_policy(setup: MigDaySetup, decide: MigDayPolicy, label: str) -> MigDayRun:
    """Run the day of ``setup`` under the policy object ``decide`` (what :func:`run_mig_day`
    does once it has made the policy; a policy that searches over others calls it too)."""
    cfg = setup.config
    state = _Fleet(setup.nodes, decide.initial_layouts(_fleet_gpus(setup.nodes)))
    run = MigDayRun(label, setup.seed, len(state.gpus), cfg)
    run.pods = [p.fresh() for p in setup.workload.pods]
    run.initial_layouts = list(state.layouts)
    for c in CLASSES:
        for p, _ in c.profiles:
            run.allocated_by_profile[p] = []
            run.demand_by_profile[p] = []
    jobs = _Pods(run.pods)
    for k in range(cfg.rounds):
        now = k * cfg.round_seconds
        jobs.advance(now, state)
        t0 = time.perf_counter()
        view = state.view(now, k, jobs, cfg)
        plan = decide.plan(view)
        solved = _round(setup, state, jobs, plan, view, run)
        run.decision_seconds.append(time.perf_counter() - t0)
        run.solver_calls += int(solved)
        _record(run, now, jobs, state)
        if setup.progress is not None:
            setup.progress(ProgressEvent(k + 1, cfg.rounds, "rounds", label))
    run.final_layouts = list(state.layouts)
    run.info = dict(getattr(decide, "info", {}))
    return run


def _fleet_gpus(nodes: Sequence[Node]) -> tuple[MigGpu, ...]:
    return tuple(MigGpu(n.name, g.index, g.model, g.nvlink) for n in nodes for g in n.gpus)


class _Fleet:
    """The fleet's MIG state: layouts, who holds which instance, change and ready times."""

    def __init__(self, nodes: Sequence[Node], layouts: Sequence[tuple[MigInstance, ...]]) -> None:
        self.nodes = tuple(nodes)
        self.gpus = _fleet_gpus(nodes)
        if len(layouts) != len(self.gpus):
            raise ValueError(f"initial layouts: {len(layouts)} for {len(self.gpus)} GPUs")
        self.layouts = [tuple(x) for x in layouts]
        self.occupied: list[dict[int, str]] = [{} for _ in self.gpus]
        self.changed_at = [-math.inf] * len(self.gpus)
        self.ready_at = [-math.inf] * len(self.gpus)
        self.by_place = {(g.node, g.index): i for i, g in enumerate(self.gpus)}

    def view(self, now: float, index: int, jobs: _Pods, cfg: MigDayConfig) -> MigView:
        return MigView(
            now,
            index,
            self.gpus,
            self.layouts,
            self.occupied,
            self.changed_at,
            self.ready_at,
            jobs.pending_in_order(),
            list(jobs.running.values()),
            cfg,
        )


class _Pods:
    """Where every pod of a run is: waiting or placed (by id)."""

    def __init__(self, pods: Sequence[MigPod]) -> None:
        self.pods = pods
        self.by_id = {p.id: p for p in pods}
        self.pending: dict[str, MigPod] = {}
        self.running: dict[str, MigPod] = {}
        self.next = 0

    def advance(self, now: float, fleet: _Fleet) -> None:
        """Departures, arrivals and pods out of patience, up to ``now``."""
        for p in list(self.running.values()):
            if p.end <= now + 1e-9:
                p.state = "done"
                del fleet.occupied[p.gpu][p.slot]
                del self.running[p.id]
        while self.next < len(self.pods) and self.pods[self.next].arrival <= now + 1e-9:
            p = self.pods[self.next]
            p.state = "pending"
            self.pending[p.id] = p
            self.next += 1
        for p in list(self.pending.values()):
            if now - p.arrival >= p.patience - 1e-9:
                p.state = "abandoned"
                del self.pending[p.id]

    def pending_in_order(self) -> list[MigPod]:
        return list(self.pending.values())  # inserted in arrival order


def _granted(view: MigView, plan: MigPlan) -> frozenset[int]:
    """The GPUs the engine may re-carve this round: asked by the policy and past their hold."""
    return frozenset(g for g in plan.recarvable if 0 <= g < len(view.gpus) and not view.held(g))


def _shown(view: MigView, plan: MigPlan, g: int) -> tuple[MigInstance, ...]:
    """GPU ``g``'s layout as the round offers it: occupied instances always, free ones unless
    the plan hides them."""
    hidden = plan.hidden.get(g, frozenset())
    busy = view.occupied[g]
    return tuple(i for i in view.layouts[g] if i.start in busy or i.start not in hidden)


def _round(
    setup: MigDaySetup,
    state: _Fleet,
    jobs: _Pods,
    plan: MigPlan,
    view: MigView,
    run: MigDayRun,
) -> bool:
    """One round: the Problem, the engine, the result applied. Returns whether the engine was
    called (it is not when no waiting pod could go anywhere: no free instance of a waiting
    profile is offered and no GPU may be re-carved, so the engine could place nothing)."""
    granted = _granted(view, plan)
    shown = [_shown(view, plan, g) for g in range(len(state.gpus))]
    wanted = {p.profile for p in view.pending}
    if not wanted or not (
        granted
        or any(
            i.profile in wanted and i.start not in state.occupied[g]
            for g, layout in enumerate(shown)
            for i in layout
        )
    ):
        run.reconfigs.append(0)
        return False
    problem = _problem(state, shown, granted, view, plan.reconfigure_cost)
    params = setup.params.replace(seed=setup.seed + setup.params.seed + view.index)
    result = solve(problem, params=params)
    if setup.verify:
        from allocator.verify import check_or_raise

        check_or_raise(problem, result)
    if result.evicted:
        raise RuntimeError(f"round {view.index}: the engine evicted {list(result.evicted)}")
    recarved = [x for x in result.layouts if x.recarved]
    for x in recarved:
        g = state.by_place[(x.node, x.gpu)]
        if g not in granted or state.occupied[g]:
            raise RuntimeError(f"round {view.index}: GPU {x.node}/{x.gpu} re-carved unasked")
        run.changes.append(LayoutChange(view.now, g, state.layouts[g], tuple(x.instances)))
        state.layouts[g] = tuple(x.instances)
        state.changed_at[g] = view.now
        state.ready_at[g] = view.now + setup.config.recarve_delay
    run.reconfigs.append(len(recarved))
    for w in result.winners:
        _place(state, jobs, jobs.by_id[w.bid_id], w.placements[0], view.now)
    return True


def _problem(
    state: _Fleet,
    shown: list[tuple[MigInstance, ...]],
    granted: frozenset[int],
    view: MigView,
    reconfigure_cost: float,
) -> Problem:
    """The round as the engine sees it: the fleet with its layouts, running pods as incumbents
    (kept: nothing is preempted in this scenario), waiting pods as bids for their profile."""
    nodes = []
    g = 0
    for n in state.nodes:
        gpus = []
        for gpu in n.gpus:
            gpus.append(
                Gpu(
                    gpu.index,
                    gpu.model,
                    "mig",
                    nvlink=gpu.nvlink,
                    layout=shown[g],
                    recarvable=g in granted,
                )
            )
            g += 1
        nodes.append(replace(n, gpus=tuple(gpus)))
    total = sum(p.value for p in view.pending) + 1.0
    return Problem(
        nodes=tuple(nodes),
        wallets=(Wallet(_WALLET, round(total, 6)),),
        bids=tuple(
            Bid(p.id, p.klass, _WALLET, (Alternative(p.value, Unit("mig", profile=p.profile)),))
            for p in view.pending
        ),
        incumbents=tuple(
            Incumbent(
                p.id,
                p.klass,
                value=p.value,
                placements=(_placement(state, p),),
                preemptible=False,
            )
            for p in view.running
        ),
        reconfigure_cost=reconfigure_cost,
        round_id=f"mig-day-{view.index}",
    )


def _placement(state: _Fleet, p: MigPod) -> Placement:
    gpu = state.gpus[p.gpu]
    return Placement(gpu.node, (gpu.index,), mig_profile=p.profile, mig_start=p.slot)


def _place(state: _Fleet, jobs: _Pods, p: MigPod, where: Placement, now: float) -> None:
    """Pod ``p`` won ``where``: it holds that instance from now and starts when its GPU is
    ready (at once, or after a re-carving)."""
    g = state.by_place[(where.node, where.gpus[0])]
    slot = where.mig_start
    if where.mig_profile != p.profile or slot is None:
        raise RuntimeError(f"pod {p.id} ({p.profile}) placed as {where}")
    if MigInstance(p.profile, slot) not in state.layouts[g] or slot in state.occupied[g]:
        raise RuntimeError(f"pod {p.id} placed on {where}, not a free instance of the layout")
    state.occupied[g][slot] = p.id
    p.state, p.gpu, p.slot, p.placed = "running", g, slot, now
    p.start = max(now, state.ready_at[g])
    p.end = p.start + p.duration
    del jobs.pending[p.id]
    jobs.running[p.id] = p


def _record(run: MigDayRun, now: float, jobs: _Pods, state: _Fleet) -> None:
    """The round's figures after its decisions."""
    run.times.append(now)
    alloc = dict.fromkeys(run.allocated_by_profile, 0.0)
    demand = dict.fromkeys(run.demand_by_profile, 0.0)
    value = 0.0
    for p in jobs.running.values():
        demand[p.profile] += p.equivalents
        if p.start <= now + 1e-9:
            alloc[p.profile] += p.equivalents
            value += p.value
    for p in jobs.pending.values():
        demand[p.profile] += p.equivalents
    for profile, x in alloc.items():
        run.allocated_by_profile[profile].append(x)
        run.demand_by_profile[profile].append(demand[profile])
    run.allocated.append(sum(alloc.values()))
    run.value_rate.append(value)
    run.pending.append(len(jobs.pending))
