"""The policy benchmark: many policies x seeds over one or more traces, with files and plots.

``simulate(...)`` runs :func:`allocator.sim.replay.run_replay` for every (trace, policy, seed)
(``auction`` once per mode), in parallel processes, and writes into ``out_dir``:

- ``runs/<trace>/<policy>/seed<N>.csv``: the curve at every whole arrived % (0..130): allocation
  ratio, fragment amount and fragmentation rate (the authors' discretisation);
- ``runs/<trace>/<policy>/seed<N>.json``: the headline figures, failed pods by type, timings;
- ``summary.json`` and ``summary.csv``: per trace and policy, the mean (and min/max) over seeds;
  the summary's ``ceilings`` give, per trace, the proven ceiling at 100% arrived for the same
  seeds' arrivals (:mod:`allocator.sim.bound`): no policy can allocate more;
- ``alloc_<trace>.png``: allocation ratio against arrived workload per policy, with the ceiling
  marked at 100% (if matplotlib is installed).
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.sim.bound import bound_at_arrived
from allocator.sim.policies.registry import get, names
from allocator.sim.progress import ProgressEvent
from allocator.sim.replay import Curve, curve_points, run_replay, summarize
from allocator.sim.traces import (
    OPENB_TRACES,
    ClusterTrace,
    PodTrace,
    load_openb_nodes,
    load_openb_pods,
    resolve_trace,
)
from allocator.solvers import SolveParams

__all__ = ["RunSpec", "expand_policies", "expand_traces", "simulate"]

_log = logging.getLogger(__name__)

AUCTION_MODES = ("online", "batch")
HEADLINE = ("alloc_at_100", "alloc_at_130", "frag_rate_at_90")
#: What a migration variant adds to its runs and summary (replay.summarize).
MOVES = (
    "pods_moved",
    "moved_pct",
    "pods_moved_at_100",
    "moved_pct_at_100",
    "rescued_at_100",
    "gpus_per_move_at_100",
)


def __getattr__(name: str) -> tuple[str, ...]:
    """``POLICIES``: the policy names ``simulate`` accepts (the openb policies of the registry,
    :mod:`allocator.sim.policies`; a per-mode one such as ``auction`` expands to its modes)."""
    if name == "POLICIES":
        return names("openb")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class RunSpec:
    """One replay: which trace files, which policy (and auction mode), which seed."""

    trace: str
    nodes: str
    pods: str
    policy: str
    mode: str
    seed: int
    batch: int
    params: SolveParams | None = None

    @property
    def label(self) -> str:
        """``policy``, with the mode for a per-mode policy (``auction-online``)."""
        return get(self.policy, "openb").label(self.mode)


#: A finished run: its spec, its record (headline figures, failures, timings), its curve points.
_Outcome = tuple[RunSpec, dict[str, Any], list[dict[str, float]]]


def expand_policies(policies: Sequence[str], modes: Sequence[str] = AUCTION_MODES) -> list[str]:
    """Validated policy names, a per-mode one (``auction``) kept once (its modes are expanded
    per run)."""
    known = names("openb")
    out: list[str] = []
    for raw in policies:
        name = raw.strip()
        if name not in known:
            raise ValueError(f"policies: unknown {name!r} (known: {', '.join(known)})")
        if name not in out:
            out.append(name)
    for m in modes:
        if m not in AUCTION_MODES:
            raise ValueError(f"modes: unknown {m!r} (known: {', '.join(AUCTION_MODES)})")
    if not out:
        raise ValueError("policies: name at least one")
    return out


def expand_traces(names: Sequence[str]) -> list[str]:
    """Short trace names; ``openb-all`` stands for every openb variant."""
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        items = [f"openb-{v}" for v in OPENB_TRACES] if name == "openb-all" else [name]
        for item in items:
            resolve_trace(item)  # raises TraceError on an unknown name
            if item not in out:
                out.append(item)
    return out


def _run(spec: RunSpec) -> _Outcome:
    cluster = load_openb_nodes(spec.nodes)
    pods = load_openb_pods(spec.pods, cluster)
    t0 = time.perf_counter()
    curve: Curve = run_replay(
        cluster,
        pods,
        spec.policy,
        spec.seed,
        mode=spec.mode,
        batch=spec.batch,
        params=spec.params,
    )
    seconds = time.perf_counter() - t0
    record: dict[str, Any] = {
        "trace": spec.trace,
        "policy": spec.label,
        "seed": spec.seed,
        **summarize(curve),
        "pods": curve.pods,
        "placed": curve.placed,
        "failed": curve.failed,
        "seconds": seconds,
        "solver_seconds": curve.solver_seconds,
        "rounds": curve.rounds,
    }
    return spec, record, curve_points(curve)


def simulate(
    traces: Sequence[str],
    policies: Sequence[str],
    seeds: int | Sequence[int] = 10,
    *,
    modes: Sequence[str] = AUCTION_MODES,
    batch: int = 20,
    out_dir: str | Path | None = None,
    jobs: int = 1,
    nodes: str | Path | None = None,
    pods: str | Path | None = None,
    params: SolveParams | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the summary (also written under ``out_dir`` if given).

    ``seeds`` is a count (seeds 42, 43, ... as in the paper) or a list. ``nodes``/``pods`` give
    trace files by path instead of short names (the trace is then called ``custom``).
    ``params`` are the solve options of every run (:func:`allocator.sim.replay.run_replay`;
    default its :data:`~allocator.sim.replay.DEFAULT_PARAMS`). ``progress`` gets a
    :class:`~allocator.sim.progress.ProgressEvent` as each run finishes.
    """
    chosen = expand_policies(policies, modes)
    seed_list = list(range(42, 42 + seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds: need at least one")
    if batch < 1:
        raise ValueError("batch: must be >= 1")
    if jobs < 1:
        raise ValueError("jobs: must be >= 1")
    files = _trace_files(traces, nodes, pods)
    loaded = {}  # fail fast, before any process starts; kept for the ceilings
    for t, n, p in files:
        cluster = load_openb_nodes(n)
        loaded[t] = (cluster, load_openb_pods(p, cluster))
    specs = [
        RunSpec(t, n, p, pol, mode, seed, batch, params)
        for t, n, p in files
        for pol in chosen
        for mode in (modes if get(pol, "openb").per_mode else ("online",))
        for seed in seed_list
    ]
    started = time.perf_counter()
    results: list[_Outcome] = []
    for outcome in _execute(specs, jobs):
        results.append(outcome)
        if progress is not None:
            progress(ProgressEvent(len(results), len(specs), "runs", _item(outcome[0])))
    results.sort(key=lambda r: (r[0].trace, r[0].label, r[0].seed))
    summary = _summarize(results, seed_list, time.perf_counter() - started)
    summary["ceilings"] = {t: _ceiling(*loaded[t], seed_list) for t, _, _ in files}
    if out_dir is not None:
        _write(Path(out_dir), results, summary)
    return summary


def _trace_files(
    traces: Sequence[str], nodes: str | Path | None, pods: str | Path | None
) -> list[tuple[str, str, str]]:
    """(trace, node file, pod file) of the custom files (if given) and the named traces."""
    files: list[tuple[str, str, str]] = []
    if nodes is not None or pods is not None:
        if nodes is None or pods is None:
            raise ValueError("nodes/pods: give both files")
        files.append(("custom", str(nodes), str(pods)))
    for t in expand_traces(traces):
        node_file, pod_file = resolve_trace(t)
        files.append((t, str(node_file), str(pod_file)))
    if not files:
        raise ValueError("trace: name a trace or give --nodes and --pods")
    return files


def _execute(specs: Sequence[RunSpec], jobs: int) -> Iterator[_Outcome]:
    """The runs' outcomes as they finish (in order with one job)."""
    if jobs == 1:
        for spec in specs:
            yield _run(spec)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run, s) for s in specs]
        for fut in as_completed(futures):
            yield fut.result()


def _item(spec: RunSpec) -> str:
    return f"{spec.trace} {spec.label} seed {spec.seed}"


def _ceiling(cluster: ClusterTrace, pods: PodTrace, seeds: list[int]) -> dict[str, float]:
    """The proven allocation ceiling at 100% arrived for each seed's arrivals: mean, min, max."""
    pct = [bound_at_arrived(pods, int(cluster.total_gpus), s).percent for s in seeds]
    return {
        "alloc_at_100": statistics.fmean(pct),
        "alloc_at_100_min": min(pct),
        "alloc_at_100_max": max(pct),
    }


def _summarize(
    results: list[_Outcome],
    seeds: list[int],
    seconds: float,
) -> dict[str, Any]:
    by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for spec, rec, _ in results:
        by.setdefault(spec.trace, {}).setdefault(spec.label, []).append(rec)
    traces: dict[str, Any] = {}
    for trace, pols in by.items():
        traces[trace] = {}
        for label, recs in pols.items():
            entry: dict[str, Any] = {}
            for key in HEADLINE:
                vals = [r[key] for r in recs]
                entry[key] = statistics.fmean(vals)
                entry[f"{key}_min"] = min(vals)
                entry[f"{key}_max"] = max(vals)
            for key in MOVES:
                if all(key in r for r in recs):
                    entry[key] = statistics.fmean(r[key] for r in recs)
                    entry[f"{key}_max"] = max(r[key] for r in recs)
            entry["seconds_per_run"] = statistics.fmean(r["seconds"] for r in recs)
            entry["runs"] = len(recs)
            traces[trace][label] = entry
    return {"seeds": seeds, "seconds": seconds, "traces": traces}


def _write(
    out: Path,
    results: list[_Outcome],
    summary: dict[str, Any],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for spec, rec, points in results:
        folder = out / "runs" / spec.trace / spec.label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed{spec.seed}.json").write_text(json.dumps(rec, indent=2) + "\n")
        with (folder / f"seed{spec.seed}.csv").open("w", newline="") as fh:
            dw = csv.DictWriter(fh, fieldnames=list(points[0]) if points else ["arrived"])
            dw.writeheader()
            dw.writerows(points)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trace", "policy", *HEADLINE, "runs", "seconds_per_run", *MOVES])
        for trace, pols in summary["traces"].items():
            for label, e in pols.items():
                w.writerow(
                    [
                        trace,
                        label,
                        *(f"{e[k]:.2f}" for k in HEADLINE),
                        e["runs"],
                        f"{e['seconds_per_run']:.1f}",
                        *(f"{e[k]:.2f}" if k in e else "" for k in MOVES),
                    ]
                )
    plot_allocation(out, results, summary.get("ceilings"))


def plot_allocation(
    out: Path,
    results: list[_Outcome],
    ceilings: dict[str, dict[str, float]] | None = None,
) -> list[Path]:
    """One PNG per trace: mean allocation ratio against arrived workload, one line per policy,
    and the trace's ceiling at 100% arrived if ``ceilings`` has it. Returns the files written
    (none, with a warning logged, if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log.warning("matplotlib not installed, no plots (pip install matplotlib)")
        return []
    written: list[Path] = []
    traces = sorted({s.trace for s, _, _ in results})
    for trace in traces:
        curves: dict[str, list[list[dict[str, float]]]] = {}
        for spec, _, points in results:
            if spec.trace == trace:
                curves.setdefault(spec.label, []).append(points)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, runs in sorted(curves.items()):
            xs = [p["arrived"] for p in runs[0]]
            ys = [statistics.fmean(r[i]["allocated"] for r in runs) for i in range(len(xs))]
            ax.plot(xs, ys, label=label, linewidth=1.4)
        ax.plot([0, 100], [0, 100], color="grey", linewidth=0.6, linestyle=":")
        if ceilings and trace in ceilings:
            top = ceilings[trace]["alloc_at_100"]
            ax.plot([100], [top], marker="v", color="black", linestyle="none")
            ax.annotate(
                f"ceiling {top:.2f}% (any policy)",
                (100, top),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
        ax.set_xlabel("arrived workload (% of GPU capacity)")
        ax.set_ylabel("GPU allocation ratio (%)")
        ax.set_title(f"{trace}: allocation against arrived workload (mean over seeds)")
        ax.set_xlim(60, 130)
        ax.set_ylim(60, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        path = out / f"alloc_{trace}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
