"""The mixed-priority scenario as a benchmark: policies x seeds, summary, files and plots.

``simulate_mixed(...)`` runs :func:`allocator.sim.mixed.run_mixed` for every (policy, seed) and
returns per policy the mean over seeds of each headline figure (waits per class, allocation,
preemptions, welfare, decision time); with ``out_dir`` it writes ``mixed/<policy>/seed<N>.json``
(summary and per-round series), ``mixed/<policy>/seed<N>.csv`` (one row per round: time,
demand, allocated, allocation ratio, welfare, preempted, pending, decision seconds),
``mixed_summary.json`` and ``mixed_summary.csv`` (one row per policy) and, if matplotlib is
installed, ``mixed_waits.png`` (wait-time distributions per class and policy) and
``mixed_alloc.png`` (GPU allocation per round).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allocator.sim.mixed import CLASSES, DEFAULT_SPREAD, MIXED_POLICIES, MixedRun, run_mixed

if TYPE_CHECKING:
    from allocator.solvers.params import SolveParams

__all__ = ["simulate_mixed"]


def simulate_mixed(
    policies: Sequence[str],
    seeds: int | Sequence[int] = 3,
    *,
    gpus: int = 512,
    rounds: int = 60,
    spread: float = DEFAULT_SPREAD,
    out_dir: str | Path | None = None,
    progress: bool = False,
    params: SolveParams | None = None,
) -> dict[str, Any]:
    """Run the mixed-priority scenario; ``seeds`` is a count (1, 2, ...) or a list; ``spread``
    as in :func:`allocator.sim.mixed.run_mixed` (0: research gangs keep strict locality);
    ``params`` (None: run_mixed's defaults) gives the auction's solver (``auto``: local) and
    time limit."""
    names = [p.strip() for p in policies if p.strip()]
    for p in names:
        if p not in MIXED_POLICIES:
            raise ValueError(f"policies: unknown {p!r} (known: {', '.join(MIXED_POLICIES)})")
    if not names:
        raise ValueError("policies: name at least one")
    seed_list = list(range(1, 1 + seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds: need at least one")
    solve: dict[str, Any] = {}
    if params is not None:
        solver = "local" if params.solver == "auto" else params.solver  # no CP-SAT here
        solve = {"solver": solver, "time_limit": params.time_limit}
    runs: list[MixedRun] = []
    total = len(names) * len(seed_list)
    for p in names:
        for s in seed_list:
            runs.append(run_mixed(p, seed=s, gpus=gpus, rounds=rounds, spread=spread, **solve))
            if progress:
                sys.stderr.write(f"\rmixed scenario: {len(runs)}/{total} runs")
                sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    summary: dict[str, Any] = {
        "seeds": seed_list,
        "gpus": gpus,
        "rounds": rounds,
        "spread": spread,
        "policies": {},
    }
    for p in names:
        recs = [r.summary() for r in runs if r.policy == p]
        keys = [k for k, v in recs[0].items() if isinstance(v, int | float) and k != "seed"]
        summary["policies"][p] = {k: statistics.fmean(float(r[k]) for r in recs) for k in keys} | {
            "runs": len(recs)
        }
    if out_dir is not None:
        _write(Path(out_dir), runs, summary)
    return summary


def _write(out: Path, runs: list[MixedRun], summary: dict[str, Any]) -> None:
    for r in runs:
        folder = out / "mixed" / r.policy
        folder.mkdir(parents=True, exist_ok=True)
        series = {
            "times": r.times,
            "demand": r.demand,
            "allocated": r.allocated,
            "welfare": r.welfare,
            "decision_seconds": r.decision_seconds,
            "preempted": r.preempted,
            "waits": {k: r.waits(k).tolist() for k in CLASSES},
        }
        (folder / f"seed{r.seed}.json").write_text(
            json.dumps({"summary": r.summary(), "series": series}, indent=1) + "\n"
        )
        with (folder / f"seed{r.seed}.csv").open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(
                [
                    "round",
                    "time_s",
                    "demand",
                    "allocated",
                    "allocation",
                    "welfare",
                    "preempted",
                    "pending",
                    "decision_s",
                ]
            )
            for k, t in enumerate(r.times):
                rows.writerow(
                    [
                        k,
                        t,
                        round(r.demand[k], 6),
                        round(r.allocated[k], 6),
                        round(r.allocated[k] / r.capacity, 6),
                        round(r.welfare[k], 6),
                        r.preempted[k],
                        r.pending_count[k],
                        round(r.decision_seconds[k], 6),
                    ]
                )
    (out / "mixed_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "mixed_summary.csv").open("w", newline="") as fh:
        table = csv.writer(fh)
        policies = list(summary["policies"])
        keys = list(summary["policies"][policies[0]]) if policies else []
        table.writerow(["policy", *keys])
        for p in policies:
            table.writerow([p, *(summary["policies"][p][k] for k in keys)])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib not installed, no plots (pip install matplotlib)", file=sys.stderr)
        return
    policies = list(summary["policies"])
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(5 * len(CLASSES), 4), squeeze=False)
    for ax, klass in zip(axes[0], CLASSES, strict=True):
        data = []
        for p in policies:
            w = [x for r in runs if r.policy == p for x in r.waits(klass).tolist()]
            data.append([x / 60.0 for x in w] or [0.0])
        ax.boxplot(data, whis=(5, 99), showfliers=False)
        ax.set_xticks(range(1, len(policies) + 1), policies)
        ax.set_title(f"{klass}: wait until placed (minutes; whiskers p5-p99)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "mixed_waits.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in policies:
        r = next(x for x in runs if x.policy == p)
        ax.plot([a / r.capacity * 100 for a in r.allocated], label=f"{p} (seed {r.seed})")
    ax.axhline(90, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("GPU allocation (%)")
    ax.set_title("mixed-priority scenario: allocation per round")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "mixed_alloc.png", dpi=110)
    plt.close(fig)
