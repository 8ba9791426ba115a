"""The ``mig-day`` scenario as a benchmark: policies x seeds, summary, files and the plot.

``simulate_mig_day(...)`` runs :func:`allocator.sim.migday.run_mig_day` for every (policy,
seed) and returns per policy the mean over seeds of each headline figure
(``alloc_gpu_eq_mean`` in percent of the fleet's GPU-equivalents, ``reconfigs_per_gpu_hour``,
waits, completed and abandoned pods, value); with ``out_dir`` it writes
``mig_day/<policy>/seed<N>.json`` (summary and per-round series) and ``mig_day_summary.json``;
with ``plot`` (a PNG path; needs matplotlib) it draws the first seed's day: the offered demand by
profile, each policy's allocation, and the layouts ``planned`` carved.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allocator.sim.migday import (
    MigDayConfig,
    MigDayRun,
    generate_mig_day,
    mig_fleet,
    profile_equivalents,
    run_mig_day,
)
from allocator.sim.policies.registry import get
from allocator.sim.progress import ProgressEvent
from allocator.solvers import SolveParams

__all__ = ["carved_series", "simulate_mig_day"]

_log = logging.getLogger(__name__)

#: Profiles in plotting order (small to large), with their colours.
_PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
_COLOURS = ("#9ecae1", "#4292c6", "#fdae6b", "#e6550d", "#a63603")


class _Progress:
    """Turns each simulation's per-round events into one count over all of them: the total is
    the rounds of every simulation begun (a policy may simulate candidates first) plus those of
    the runs still to come."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None, rounds: int, runs: int):
        self.callback = callback
        self.rounds = rounds
        self.unseen = runs
        self.run = ""
        self.done: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def start(self, seed: int, policy: str) -> None:
        """A run of the benchmark begins (its own rounds are reported under ``policy``)."""
        self.run = f"{seed}/"
        self.unseen -= 1
        self.totals[self.run + policy] = self.rounds
        self.done[self.run + policy] = 0

    def __call__(self, event: ProgressEvent) -> None:
        if self.callback is None:
            return
        key = self.run + event.item
        self.totals[key] = event.total
        self.done[key] = event.done
        total = sum(self.totals.values()) + self.unseen * self.rounds
        self.callback(ProgressEvent(sum(self.done.values()), total, "rounds", event.item))


def simulate_mig_day(
    policies: Sequence[str],
    seeds: int | Sequence[int] = 1,
    *,
    config: MigDayConfig | None = None,
    params: SolveParams | None = None,
    out_dir: str | Path | None = None,
    plot: str | Path | None = None,
    verify: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> dict[str, Any]:
    """Run the ``mig-day`` scenario; ``seeds`` is a count (seeds 1, 2, ...) or a list.

    Returns ``{"policies": {name: {"alloc_gpu_eq_mean": %, "reconfigs_per_gpu_hour": ..., ...}},
    ...}`` (means over seeds) with the scenario's settings, what each policy reported (``info``:
    ``fixed-best``'s mix and search), and ``planned_minus_best_fixed`` (points of allocation)
    when ``planned`` and a ``fixed-*`` policy ran. ``progress`` gets one count of rounds over
    all simulations (``fixed-best`` adds its candidates' days).
    """
    cfg = config or MigDayConfig()
    names = [p.strip() for p in policies if p.strip()]
    if not names:
        raise ValueError("policies: name at least one")
    for p in names:
        try:
            get(p, "mig-day")
        except ValueError as e:
            raise ValueError(f"policies: {str(e).removeprefix('policy: ')}") from None
    seed_list = list(range(1, 1 + seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds: need at least one")
    bar = _Progress(progress, cfg.rounds, len(names) * len(seed_list))
    runs: list[MigDayRun] = []
    for s in seed_list:
        for p in names:
            bar.start(s, p)
            runs.append(
                run_mig_day(p, seed=s, config=cfg, params=params, verify=verify, progress=bar)
            )
    summary = _summary(cfg, names, seed_list, runs)
    if out_dir is not None:
        _write(Path(out_dir), runs, summary)
    if plot is not None:
        _plot(Path(plot), cfg, runs, names)
    return summary


def _summary(
    cfg: MigDayConfig, names: list[str], seeds: list[int], runs: list[MigDayRun]
) -> dict[str, Any]:
    nodes = mig_fleet(cfg.nodes_path, cfg.nodes)
    models = Counter(g.model for n in nodes for g in n.gpus)
    out: dict[str, Any] = {
        "scenario": "mig-day",
        "seeds": seeds,
        "nodes": len(nodes),
        "gpus": sum(models.values()),
        "models": dict(models),
        "day_hours": cfg.day_seconds / 3600.0,
        "round_seconds": cfg.round_seconds,
        "rounds": cfg.rounds,
        "load": cfg.load,
        "recarve_delay_s": cfg.recarve_delay,
        "hold_s": cfg.hold_seconds,
        "reconfigure_cost": cfg.reconfigure_cost,
        "alloc_unit": "percent of the fleet's GPU-equivalents (a MIG instance: compute slices / 7)",
        "policies": {},
        "info": {},
    }
    for p in names:
        recs = [r.summary() for r in runs if r.policy == p]
        keys = [k for k, v in recs[0].items() if isinstance(v, int | float) and k != "seed"]
        out["policies"][p] = {k: statistics.fmean(float(r[k]) for r in recs) for k in keys} | {
            "runs": len(recs)
        }
        infos = [r.info for r in runs if r.policy == p and r.info]
        if infos:
            out["info"][p] = infos
    fixed = [p for p in names if p.startswith("fixed-")]
    if "planned" in names and fixed:
        best = max(fixed, key=lambda p: out["policies"][p]["alloc_gpu_eq_mean"])
        out["best_fixed"] = best
        out["planned_minus_best_fixed"] = (
            out["policies"]["planned"]["alloc_gpu_eq_mean"]
            - out["policies"][best]["alloc_gpu_eq_mean"]
        )
    return out


def _series(r: MigDayRun) -> dict[str, Any]:
    return {
        "times": r.times,
        "allocated": r.allocated,
        "allocated_by_profile": r.allocated_by_profile,
        "demand_by_profile": r.demand_by_profile,
        "value_rate": r.value_rate,
        "pending": r.pending,
        "reconfigs": r.reconfigs,
        "decision_seconds": r.decision_seconds,
        "changes": [
            {
                "time": c.time,
                "gpu": c.gpu,
                "before": [[i.profile, i.start] for i in c.before],
                "after": [[i.profile, i.start] for i in c.after],
            }
            for c in r.changes
        ],
    }


def _write(out: Path, runs: list[MigDayRun], summary: dict[str, Any]) -> None:
    for r in runs:
        folder = out / "mig_day" / r.policy
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed{r.seed}.json").write_text(
            json.dumps({"summary": r.summary(), "info": r.info, "series": _series(r)}) + "\n"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "mig_day_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def carved_series(r: MigDayRun) -> dict[str, np.ndarray]:
    """GPU-equivalents carved as each profile after every round (from the initial layouts and
    the re-carvings): what the fleet's layouts offered over the day."""
    carved = {p: 0.0 for p in _PROFILES}
    for layout in r.initial_layouts:
        for i in layout:
            carved[i.profile] = carved.get(i.profile, 0.0) + profile_equivalents(i.profile)
    out = {p: np.zeros(len(r.times)) for p in carved}
    changes = sorted(r.changes, key=lambda c: c.time)
    k = 0
    for t_index, t in enumerate(r.times):
        while k < len(changes) and changes[k].time <= t:
            for i in changes[k].before:
                carved[i.profile] -= profile_equivalents(i.profile)
            for i in changes[k].after:
                carved[i.profile] += profile_equivalents(i.profile)
            k += 1
        for p, x in carved.items():
            out[p][t_index] = x
    return out


def _plot(path: Path, cfg: MigDayConfig, runs: list[MigDayRun], names: list[str]) -> None:
    """The first seed's day: offered demand by profile, allocation per policy, and (with
    ``planned``) the layouts it carved."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log.warning("matplotlib not installed, no plot (pip install gpu-allocator[plot])")
        return
    seed = runs[0].seed
    first = [r for r in runs if r.seed == seed]
    gpus = first[0].gpus
    hours = np.asarray(first[0].times) / 3600.0
    day = generate_mig_day(
        gpus,
        seed,
        day_seconds=cfg.day_seconds,
        load=cfg.load,
        inference_low=cfg.inference_low,
        inference_high=cfg.inference_high,
    )
    offered = day.offered(first[0].times)
    planned = next((r for r in first if r.policy == "planned"), None)
    panels = 3 if planned is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.1 * panels), sharex=True)
    _stack(axes[0], hours, offered, gpus, "offered demand by profile (% of fleet GPU-eq)")
    axes[0].axhline(100, color="black", linewidth=0.8, linestyle=":")
    for r in first:
        axes[1].plot(
            hours,
            np.asarray(r.allocated) / gpus * 100,
            linewidth=1.1,
            label=f"{r.policy} ({r.summary()['alloc_gpu_eq_mean']:.1f}%)",
        )
    axes[1].set_ylabel("allocated (%)")
    axes[1].set_ylim(0, 105)
    axes[1].set_title(
        "allocated GPU-equivalents, % of the fleet (mean over the day in the legend)", fontsize=9
    )
    axes[1].legend(fontsize=7, ncol=2, loc="lower left")
    axes[1].grid(alpha=0.3)
    if planned is not None:
        _stack(
            axes[2],
            hours,
            carved_series(planned),
            gpus,
            f"planned: layouts carved ({len(planned.changes)} re-carvings)",
        )
    axes[-1].set_xlabel("hour of the day")
    axes[-1].set_xticks(range(0, int(cfg.day_seconds / 3600) + 1, 2))
    fig.suptitle(
        f"mig-day: {gpus} MIG GPUs, seed {seed}, rounds of {cfg.round_seconds:.0f} s", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stack(ax: Any, hours: np.ndarray, series: dict[str, Any], gpus: int, title: str) -> None:
    ys = [np.asarray(series.get(p, np.zeros(len(hours)))) / gpus * 100 for p in _PROFILES]
    ax.stackplot(hours, *ys, labels=_PROFILES, colors=_COLOURS, alpha=0.9)
    ax.set_ylabel("% of fleet")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=5, loc="upper center")
    ax.grid(alpha=0.3)
