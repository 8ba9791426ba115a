"""The MIG layout policies of the ``mig-day`` scenario (:mod:`allocator.sim.migday`).

* ``fixed-all-1g``, ``fixed-balanced``, ``fixed-all-7g``: every GPU keeps one named layout
  (:data:`~allocator.sim.migday.LAYOUTS`) all day; the engine only fills free instances.
* ``fixed-best``: the best fleet-wide mix of the candidate layouts (:data:`SEARCH_LAYOUTS`),
  found by :func:`search_best_mix` on the day itself (or on ``MigDayConfig.search_seed``'s day),
  then kept all day.
* ``planned``: layouts re-planned every round through the engine: every idle GPU past its hold
  time is offered re-carvable at ``MigDayConfig.reconfigure_cost``, and the engine re-carves it
  when the waiting pods it can then take are worth more than that; when waiting pods need more
  than the idle GPUs can give, GPUs carved mostly into profiles nobody lacks are drained
  (their free instances not offered) until they are idle.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from allocator.model import MigInstance
from allocator.sim.migday import (
    LAYOUTS,
    MigDayRun,
    MigGpu,
    MigPlan,
    MigView,
    generate_mig_day,
    profile_equivalents,
    simulate_policy,
)
from allocator.sim.policies.registry import MigDaySetup, register

__all__ = [
    "SEARCH_LAYOUTS",
    "FixedLayouts",
    "PlannedLayouts",
    "fluid_scores",
    "mix_layouts",
    "search_best_mix",
]

#: Layouts ``fixed-best`` mixes, and the granularity of its fractions (eighths of the fleet).
SEARCH_LAYOUTS = ("all-1g", "mostly-2g", "balanced", "4g-3g", "all-7g")
SEARCH_STEP = 8
#: Mixes of the fluid screen that ``fixed-best`` simulates.
SEARCH_TOP = 3
#: Most of the fleet ``planned`` drains at once.
MAX_DRAIN_SHARE = 0.25
#: ``planned`` drains a GPU only if at least this share of it is carved into profiles that no
#: waiting pod lacks.
DRAIN_SURPLUS = 3 / 7


def mix_layouts(mix: Mapping[str, float], gpus: int) -> list[tuple[MigInstance, ...]]:
    """Per-GPU layouts of a fleet-wide mix (layout name -> fraction, summing to 1): GPU counts
    by largest remainder, in contiguous blocks in the mix's order."""
    if not mix or any(f < 0 for f in mix.values()) or not math.isclose(sum(mix.values()), 1.0):
        raise ValueError(f"mix: fractions >= 0 summing to 1, got {dict(mix)}")
    exact = {name: f * gpus for name, f in mix.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    rest = sorted(exact, key=lambda n: (-(exact[n] - counts[n]), list(mix).index(n)))
    for name in rest[: gpus - sum(counts.values())]:
        counts[name] += 1
    return [LAYOUTS[name] for name in mix for _ in range(counts[name])]


class FixedLayouts:
    """Layouts set at the start of the day and never changed (nothing is ever re-carvable)."""

    def __init__(self, mix: Mapping[str, float], info: Mapping[str, Any] | None = None) -> None:
        unknown = [n for n in mix if n not in LAYOUTS]
        if unknown:
            raise ValueError(f"mix: unknown layouts {unknown} (known: {', '.join(LAYOUTS)})")
        self.mix = {n: f for n, f in mix.items() if f > 0}
        self.info: dict[str, Any] = {"mix": dict(self.mix), **(info or {})}

    def initial_layouts(self, gpus: Sequence[MigGpu]) -> list[tuple[MigInstance, ...]]:
        return mix_layouts(self.mix, len(gpus))

    def plan(self, view: MigView) -> MigPlan:
        return MigPlan()


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Every way to write ``total`` as an ordered sum of ``parts`` integers >= 0."""
    out = []
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        edges = (-1, *cuts, total + parts - 1)
        out.append(tuple(edges[i + 1] - edges[i] - 1 for i in range(parts)))
    return out


def fluid_scores(
    offered: Mapping[str, np.ndarray],
    gpus: int,
    layouts: Sequence[str] = SEARCH_LAYOUTS,
    step: int = SEARCH_STEP,
) -> list[tuple[float, dict[str, float]]]:
    """Every mix of ``layouts`` in ``1/step`` fractions of the fleet, with its fluid score, best
    first: the mean over time of the GPU-equivalents the mix's instances could serve of the
    offered demand, sum over profiles of min(demand, instances) x size, as a % of the fleet."""
    profiles = list(offered)
    eq = np.array([profile_equivalents(p) for p in profiles])
    demand = np.stack([offered[p] for p in profiles]) / eq[:, None]  # instances over time
    per_layout = np.array(
        [[Counter(i.profile for i in LAYOUTS[n])[p] for p in profiles] for n in layouts],
        dtype=np.float64,
    )
    mixes = np.array(_compositions(step, len(layouts)), dtype=np.float64) / step
    capacity = mixes @ per_layout * gpus  # instances of each profile, per mix
    served = np.minimum(demand[None, :, :], capacity[:, :, None])
    scores = (served * eq[None, :, None]).sum(axis=1).mean(axis=1) / gpus * 100.0
    order = np.argsort(-scores, kind="stable")
    return [
        (float(scores[i]), {n: float(f) for n, f in zip(layouts, mixes[i], strict=True) if f})
        for i in order
    ]


def search_best_mix(
    setup: MigDaySetup,
    *,
    layouts: Sequence[str] = SEARCH_LAYOUTS,
    step: int = SEARCH_STEP,
    top: int = SEARCH_TOP,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The best fixed mix for ``setup``'s day: the ``top`` mixes of the fluid screen
    (:func:`fluid_scores`) each simulated for the whole day (same engine, same rounds), the one
    with the highest mean allocation kept. The day searched is the run's own (in-sample: the
    best static partition for that very day, an optimistic baseline) unless
    ``setup.config.search_seed`` names another. Returns the mix and what the search saw."""
    cfg = setup.config
    day = setup.workload
    if cfg.search_seed is not None and cfg.search_seed != setup.seed:
        day = generate_mig_day(
            day.gpus,
            cfg.search_seed,
            day_seconds=cfg.day_seconds,
            load=cfg.load,
            inference_low=cfg.inference_low,
            inference_high=cfg.inference_high,
        )
    times = np.arange(cfg.rounds) * cfg.round_seconds
    screen = fluid_scores(day.offered(times), day.gpus, layouts, step)
    candidates: list[tuple[dict[str, float], float, MigDayRun]] = []
    seen: set[tuple[tuple[MigInstance, ...], ...]] = set()
    search = MigDaySetup(
        cfg, day, setup.nodes, setup.params, setup.seed, setup.verify, setup.progress
    )
    for fluid, mix in screen:
        if len(candidates) >= top:
            break
        key = tuple(mix_layouts(mix, day.gpus))
        if key in seen:
            continue
        seen.add(key)
        label = f"fixed-best search {len(candidates) + 1}/{top}"
        run = simulate_policy(search, FixedLayouts(mix), label)
        candidates.append((mix, fluid, run))
    best = max(candidates, key=lambda c: c[2].summary()["alloc_gpu_eq_mean"])
    info = {
        "search_seed": cfg.search_seed if cfg.search_seed is not None else setup.seed,
        "search_layouts": list(layouts),
        "search_step": step,
        "search_candidates": [
            {"mix": m, "fluid": round(f, 3), "alloc_gpu_eq_mean": r.summary()["alloc_gpu_eq_mean"]}
            for m, f, r in candidates
        ],
    }
    return best[0], info


def _fixed_best(setup: MigDaySetup) -> FixedLayouts:
    mix, info = search_best_mix(setup)
    return FixedLayouts(mix, info)


class PlannedLayouts:
    """Layouts re-planned every round through the engine (see the module's description).

    Starts from ``initial`` everywhere. Each round:

    * every GPU that holds no pod and is past its hold time (*idle*) is offered re-carvable;
    * the *shortfall* is the GPU-equivalents of waiting pods beyond the free instances of
      their profiles; for every whole GPU of it, one GPU is chosen to be *converted*: among
      GPUs carved for :data:`DRAIN_SURPLUS` or more into profiles no waiting pod lacks, the ones
      that may be re-carved soonest (idle ones first, then by their last pod's end and hold
      time), at most :data:`MAX_DRAIN_SHARE` of the fleet;
    * a converted GPU's free instances are not offered: while pods run on it, it drains (it
      takes no new pods); once idle, the engine may only re-carve it (it re-carves when the
      waiting pods it can then take are worth more than the re-carving cost).

    The choice is made afresh every round (a draining GPU takes no new pods, so it stays first
    until it is idle; when the shortfall goes, so do the drains).
    """

    def __init__(self, setup: MigDaySetup, initial: str = "balanced") -> None:
        self.cost = setup.config.reconfigure_cost
        self.initial = LAYOUTS[initial]
        self.converting: frozenset[int] = frozenset()
        self.info: dict[str, Any] = {"initial": initial}

    def initial_layouts(self, gpus: Sequence[MigGpu]) -> list[tuple[MigInstance, ...]]:
        return [self.initial] * len(gpus)

    def plan(self, view: MigView) -> MigPlan:
        idle = {g for g in range(len(view.gpus)) if not view.occupied[g] and not view.held(g)}
        short = _shortfall(view)
        need = math.floor(sum(short.values()) + 1e-9)
        self.converting = self._convert(view, idle, set(short), need)
        hidden = {g: frozenset(i.start for i in view.free_instances(g)) for g in self.converting}
        return MigPlan(frozenset(idle), hidden, self.cost)

    def _convert(
        self, view: MigView, idle: set[int], short: set[str], count: int
    ) -> frozenset[int]:
        """Up to ``count`` GPUs to convert: those carved mostly (:data:`DRAIN_SURPLUS` or more
        of their GPU-equivalents) into profiles no waiting pod lacks, the ones that may be
        re-carved soonest first."""
        count = min(count, int(MAX_DRAIN_SHARE * len(view.gpus)))
        if count < 1:
            return frozenset()
        ends = {p.id: p.end for p in view.running}
        candidates = []
        for g in range(len(view.gpus)):
            surplus = sum(
                profile_equivalents(i.profile) for i in view.layouts[g] if i.profile not in short
            )
            if surplus < DRAIN_SURPLUS - 1e-9:
                continue
            free_at = max(
                max((ends[pid] for pid in view.occupied[g].values()), default=view.now),
                view.changed_at[g] + view.config.hold_seconds,
                view.ready_at[g],
            )
            candidates.append((g not in idle, free_at, -surplus, g))
        candidates.sort()
        return frozenset(c[-1] for c in candidates[:count])


def _shortfall(view: MigView) -> dict[str, float]:
    """GPU-equivalents of waiting pods per profile beyond the free instances of it."""
    free: Counter[str] = Counter()
    for g in range(len(view.gpus)):
        free.update(i.profile for i in view.free_instances(g))
    waiting = Counter(p.profile for p in view.pending)
    return {p: (n - free[p]) * profile_equivalents(p) for p, n in waiting.items() if n > free[p]}


def _fixed(name: str) -> Any:
    return lambda setup: FixedLayouts({name: 1.0})


for _name in ("all-1g", "balanced", "all-7g"):
    register(
        f"fixed-{_name}",
        "mig-day",
        _fixed(_name),
        summary=f"every GPU carved {_name} all day",
    )
register(
    "fixed-best",
    "mig-day",
    _fixed_best,
    summary="the best fixed mix of candidate layouts for the day (searched, then kept)",
)
register(
    "planned",
    "mig-day",
    PlannedLayouts,
    summary="the engine re-carves idle GPUs when that pays; hold time, re-carving cost, drains",
)
