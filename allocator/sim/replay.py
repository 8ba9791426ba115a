"""The FGD experiment (Weng et al., USENIX ATC'23) as its authors' simulator runs it.

Per seed: pods sorted by name and shuffled; random pods of the trace cloned and appended until
the GPU request reaches ``inflation`` (1.3) x the cluster's GPU capacity; no departures; each pod
placed once (a pod that fits nowhere fails for good). After every pod the simulator records
arrived workload (GPU milli requested so far, failed pods included, as % of capacity), the GPU
allocation ratio, FGD's fragment amount (% of all GPUs) and fragmentation rate (% of idle GPU).
The figure reported at x% arrived is the mean of the rows whose arrived % rounds to x, as the
authors' analysis scripts compute it. Method details and sources: docs/simulator.md.

The ``auction`` policy runs the project's engine on the same state: ``online`` clears a round per
pod; ``batch`` clears a round every ``batch`` pods (the pods of a round wait, unallocated, until it
clears: the rows recorded while they wait count them as not allocated).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from allocator import _core
from allocator.sim.policies.registry import OpenbPolicy, OpenbSetup, get, names
from allocator.sim.progress import ProgressEvent
from allocator.sim.traces import ClusterTrace, PodTrace
from allocator.solvers import SolveParams
from allocator.solvers.patterns import demand_values

__all__ = [
    "DEFAULT_PARAMS",
    "Curve",
    "arrival_order",
    "arrival_table",
    "curve_points",
    "new_cluster",
    "pattern_values",
    "pod_kind",
    "run_replay",
    "summarize",
    "typical_workload",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``PLACEMENT_POLICIES``: the openb policies that run once per seed (one-pod score policies
    of the C++ core and any such registered, not the variants reported apart such as
    migration), read from the registry when asked."""
    if name == "PLACEMENT_POLICIES":
        return tuple(n for n in names("openb", headline=True) if not get(n, "openb").per_mode)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: GPU memory (GB) assumed per openb model name, only for the engine's model table (no openb
#: pod asks for GPU memory). G2/G3 are anonymised in the trace.
_MODEL_MEMORY_GB = {"T4": 16.0, "P100": 16.0, "V100M16": 16.0, "V100M32": 32.0, "A10": 24.0}


def pod_kind(gpus: int, milli: int) -> str:
    """Type of a pod for failure counts: cpu, share, gpu1, multi."""
    if gpus == 0:
        return "cpu"
    if milli < 1000:
        return "share"
    return "gpu1" if gpus == 1 else "multi"


def typical_workload(pods: PodTrace, coverage: float = 0.95) -> dict[str, np.ndarray]:
    """FGD's target workload: pod shapes (CPU, GPUs, milli per GPU, model mask) by frequency.

    The most frequent shapes are taken while the running count is below ``coverage`` of all
    pods (the shape that crosses it is included); frequencies are renormalised. Ties in count go
    to larger CPU, then milli, then GPU count, then mask (the authors' order). Each shape's
    memory is the median of its pods' (FGD's measure ignores it; the pattern rule's CPU and
    memory reserve reads it).
    """
    counts = Counter(
        zip(
            pods.cpu_milli.tolist(),
            pods.milli.tolist(),
            pods.gpus.tolist(),
            pods.models.tolist(),
            strict=True,
        )
    )
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], *kv[0]), reverse=True)
    memory = _median_memory(pods)
    chosen: list[tuple[tuple[int, int, int, int], int]] = []
    running = 0
    for shape, n in ranked:
        if running >= coverage * len(pods):
            break
        chosen.append((shape, n))
        running += n
    total = float(sum(n for _, n in chosen))
    return {
        "cpu_milli": np.array([max(s[0], 100) for s, _ in chosen], dtype=np.int64),
        "memory_mib": np.array([memory[s] for s, _ in chosen], dtype=np.int64),
        "gpus": np.array([s[2] for s, _ in chosen], dtype=np.int64),
        "milli": np.array([s[1] for s, _ in chosen], dtype=np.int64),
        "models": np.array([s[3] for s, _ in chosen], dtype=np.uint64),
        "weight": np.array([n / total for _, n in chosen], dtype=np.float64),
    }


def _median_memory(pods: PodTrace) -> dict[tuple[int, int, int, int], int]:
    """Median memory (MiB) of the pods of each shape (CPU, milli, GPUs, model mask)."""
    by_shape: dict[tuple[int, int, int, int], list[int]] = {}
    for shape, mem in zip(
        zip(
            pods.cpu_milli.tolist(),
            pods.milli.tolist(),
            pods.gpus.tolist(),
            pods.models.tolist(),
            strict=True,
        ),
        pods.memory_mib.tolist(),
        strict=True,
    ):
        by_shape.setdefault(shape, []).append(int(mem))
    return {shape: int(np.median(v)) for shape, v in by_shape.items()}


#: Pattern values per (trace contents, GPU count): one program per trace, not per run.
_VALUES: dict[tuple[bytes, int], dict[int, float]] = {}


def pattern_values(pods: PodTrace, gpus: int) -> dict[int, float]:
    """The pattern rule's net values for a trace on a cluster of ``gpus`` GPUs: the pattern
    program (:func:`allocator.solvers.patterns.demand_values`) over the trace's pods as the
    demand mix (the arrivals are the trace shuffled and cloned, so this is their distribution),
    scaled to ask for every GPU, as at 100% arrived."""
    key = (
        hashlib.sha256(pods.milli.tobytes() + pods.gpus.tobytes()).digest(),
        int(gpus),
    )
    if key not in _VALUES:
        _VALUES[key] = demand_values(pods.milli, pods.gpus, np.ones(len(pods)), int(gpus))
    return _VALUES[key]


def arrival_order(
    pods: PodTrace, capacity_milli: int, seed: int, inflation: float = 1.3
) -> np.ndarray:
    """Pod indices in arrival order: name-sorted, shuffled, then random clones appended until
    the GPU request would pass ``inflation`` x capacity (the first clone that would cross it
    stops the loop, as in the authors' tuning)."""
    rng = random.Random(seed)
    by_name = sorted(range(len(pods)), key=lambda i: pods.names[i])
    order = list(by_name)
    rng.shuffle(order)
    request = pods.gpu_milli_total
    total = int(request.sum())
    target = inflation * capacity_milli
    if total < target and len(pods) > 0:
        while True:
            i = by_name[rng.randrange(len(by_name))]
            if total + int(pods.milli[i]) > target:
                break
            total += int(request[i])
            order.append(i)
    elif total > target:
        keep = list(order)
        while total > target and keep:
            j = rng.randrange(len(keep))
            total -= int(request[keep[j]])
            keep.pop(j)
        order = keep
    return np.array(order, dtype=np.int64)


def new_cluster(cluster: ClusterTrace, seed: int, *, ties: str = "first") -> _core.SimCluster:
    """An empty simulator cluster for ``cluster`` (GPU nodes as listed).

    Nodes are scored in a seeded random order. ``ties="first"`` gives equal scores to the first
    node in that order (what reproduces the published FGD figures); ``"random"`` draws among
    them uniformly, as upstream kube-scheduler's selectHost does.
    """
    if ties not in ("first", "random"):
        raise ValueError(f"ties: must be first or random, not {ties!r}")
    memory = [_MODEL_MEMORY_GB.get(m, 16.0) for m in cluster.models]
    sim = _core.SimCluster(
        cluster.cpu_milli, cluster.memory_mib, cluster.model, cluster.gpus, memory, seed=seed
    )
    sim.set_node_order(np.random.default_rng(seed).permutation(len(cluster.names)))
    sim.set_random_ties(ties == "random")
    return sim


@dataclass
class Curve:
    """What one run recorded, one row per arrived pod (percentages)."""

    policy: str
    seed: int
    arrived: list[float] = field(default_factory=list)
    allocated: list[float] = field(default_factory=list)
    fragment: list[float] = field(default_factory=list)
    frag_rate: list[float] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)
    placed: int = 0
    pods: int = 0
    solver_seconds: float = 0.0
    rounds: int = 0
    #: Migration variants only (None otherwise): running pods moved over the run, and up to
    #: the last row whose arrived % rounds to 100 (with the pods placed by then); pods placed
    #: only thanks to moves and their GPU-equivalents, up to that row.
    moved: int | None = None
    moved_at_100: int = 0
    placed_at_100: int = 0
    rescued_at_100: int = 0
    rescued_gpus_at_100: float = 0.0


#: The replay's solve options unless told otherwise: the auction's greedy (with
#: ``solver="local"``, 1 s of local search per round), FGD's workload as the packing hint.
DEFAULT_PARAMS = SolveParams(solver="greedy", time_limit=1.0)


def run_replay(
    cluster: ClusterTrace,
    pods: PodTrace,
    policy: str,
    seed: int,
    *,
    mode: str = "online",
    batch: int = 100,
    params: SolveParams | None = None,
    ties: str = "first",
    limit: int | None = None,
    on_round: Callable[[_core.SimCluster, Sequence[int], list[object]], None] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> Curve:
    """Replay the FGD experiment for one policy and seed.

    ``policy`` is an openb policy of the registry (:mod:`allocator.sim.policies`: the one-pod
    score policies and ``auction``); a per-mode one (``auction``) clears a round per pod
    (``mode="online"``) or every ``batch`` pods (``"batch"``). ``params`` are the solve options
    (default :data:`DEFAULT_PARAMS`; the auction reads ``solver`` greedy or local,
    ``time_limit``, ``alpha``, ``fragment_scale``, ``workload_hint`` and ``seed``, added to the
    run's). ``on_round`` sees the cluster, the pods of each round and their placements after the
    round is applied; ``progress`` gets a :class:`~allocator.sim.progress.ProgressEvent` after
    every pod.
    """
    entry = get(policy, "openb")
    if mode not in ("online", "batch"):
        raise ValueError(f"mode: must be online or batch, not {mode!r}")
    if batch < 1:
        raise ValueError("batch: must be >= 1")
    capacity = int(cluster.total_gpus) * 1000
    if capacity <= 0:
        raise ValueError("cluster: has no GPUs")
    order = arrival_order(pods, capacity, seed)
    if limit is not None:
        if limit < 1:
            raise ValueError("limit: must be >= 1")
        order = order[:limit]
    setup = OpenbSetup(params or DEFAULT_PARAMS, seed, mode, batch)
    placer: OpenbPolicy = entry.factory(setup)
    sim = _loaded_cluster(cluster, pods, order, seed, ties)
    request = pods.gpu_milli_total[order]
    kinds = [
        pod_kind(int(g), int(m)) for g, m in zip(pods.gpus[order], pods.milli[order], strict=True)
    ]
    values = request.astype(np.float64) / 1000.0 + 1e-3  # GPU-equivalents (CPU-only: a token)
    curve = Curve(policy=entry.label(mode), seed=seed, pods=len(order))
    meter = _Meter(sim, curve, float(capacity))
    failed: Counter[str] = Counter()
    pending: list[int] = []
    for k in range(len(order)):
        meter.arrived += int(request[k])
        pending.append(k)
        if len(pending) >= placer.round_size or k == len(order) - 1:
            got = placer.place(sim, pending, values[pending])
            for i, where in zip(pending, got, strict=True):
                if where is None:
                    failed[kinds[i]] += 1
                else:
                    curve.placed += 1
            if on_round is not None:
                on_round(sim, list(pending), list(got))
            pending = []
        meter.record()
        if round(curve.arrived[-1]) <= 100:
            curve.placed_at_100 = curve.placed
            _note_moves(curve, placer, at_100=True)
        if progress is not None:
            progress(ProgressEvent(k + 1, len(order), "pods", curve.policy))
    curve.failed = dict(failed)
    _note_moves(curve, placer, at_100=False)
    curve.rounds = placer.rounds
    curve.solver_seconds = placer.solver_seconds
    return curve


def _note_moves(curve: Curve, placer: OpenbPolicy, *, at_100: bool) -> None:
    """Copy a migration policy's counts (``moves``, ``rescued``, ``rescued_gpus``) to the
    curve; a policy without ``moves`` moves nothing and leaves ``curve.moved`` None."""
    moves = getattr(placer, "moves", None)
    if moves is None:
        return
    if at_100:
        curve.moved_at_100 = int(moves)
        curve.rescued_at_100 = int(getattr(placer, "rescued", 0))
        curve.rescued_gpus_at_100 = float(getattr(placer, "rescued_gpus", 0.0))
    else:
        curve.moved = int(moves)


def _loaded_cluster(
    cluster: ClusterTrace, pods: PodTrace, order: np.ndarray, seed: int, ties: str
) -> _core.SimCluster:
    """The run's empty cluster with FGD's target workload, the trace's pattern values and the
    arrivals as its pod table."""
    sim = new_cluster(cluster, seed, ties=ties)
    sim.set_workload(**typical_workload(pods))
    sim.set_pattern(sorted(pattern_values(pods, int(cluster.total_gpus)).items()))
    # Clones of one pod share its trace row: every arrival gets its own row in the pod table.
    sim.set_pods(
        pods.cpu_milli[order],
        pods.memory_mib[order],
        pods.gpus[order],
        pods.milli[order],
        pods.models[order],
    )
    return sim


class _Meter:
    """Appends a row of the curve: arrived workload, allocation, fragment, fragmentation rate."""

    def __init__(self, sim: _core.SimCluster, curve: Curve, total: float) -> None:
        self.sim = sim
        self.curve = curve
        self.total = total
        self.arrived = 0

    def record(self) -> None:
        total = self.total
        used = float(self.sim.used_milli)
        idle = total - used
        frag = self.sim.fragment_milli()
        self.curve.arrived.append(100.0 * self.arrived / total)
        self.curve.allocated.append(100.0 * used / total)
        self.curve.fragment.append(100.0 * frag / total)
        self.curve.frag_rate.append(100.0 * frag / idle if idle > 0 else 0.0)


def arrival_table(pods: PodTrace, order: np.ndarray) -> PodTrace:
    """The pod table the replay loads: row k is the k-th arrival."""
    return pods.take(order)


def _at(arrived: Sequence[float], values: Sequence[float], x: int) -> float:
    """Mean of ``values`` over rows whose arrived % rounds to ``x`` (else within one point)."""
    a = np.asarray(arrived)
    v = np.asarray(values)
    rounded = np.round(a)  # numpy rounds half to even, as Python's round does
    sel = rounded == x
    if not sel.any():
        sel = np.abs(rounded - x) <= 1
    if not sel.any():
        return float("nan")
    return float(v[sel].mean())


def curve_points(curve: Curve, top: int = 130) -> list[dict[str, float]]:
    """The curve at every whole arrived % from 0 to ``top`` (the authors' discretisation)."""
    return [
        {
            "arrived": float(x),
            "allocated": _at(curve.arrived, curve.allocated, x),
            "fragment": _at(curve.arrived, curve.fragment, x),
            "frag_rate": _at(curve.arrived, curve.frag_rate, x),
        }
        for x in range(top + 1)
    ]


def summarize(curve: Curve) -> dict[str, float]:
    """The headline figures of one run; for a migration variant also its moves: ``pods_moved``
    (over the run) and ``moved_pct`` (% of the pods placed), the same at 100% arrived
    (``pods_moved_at_100``, ``moved_pct_at_100``), and the pods placed only thanks to moves by
    then (``rescued_at_100``) with their GPU-equivalents per move (``gpus_per_move_at_100``)."""
    out = {
        "alloc_at_100": _at(curve.arrived, curve.allocated, 100),
        "alloc_at_130": _at(curve.arrived, curve.allocated, 130),
        "frag_rate_at_90": _at(curve.arrived, curve.frag_rate, 90),
        "fragment_at_90": _at(curve.arrived, curve.fragment, 90),
    }
    if curve.moved is not None:
        out["pods_moved"] = float(curve.moved)
        out["moved_pct"] = 100.0 * curve.moved / max(curve.placed, 1)
        out["pods_moved_at_100"] = float(curve.moved_at_100)
        out["moved_pct_at_100"] = 100.0 * curve.moved_at_100 / max(curve.placed_at_100, 1)
        out["rescued_at_100"] = float(curve.rescued_at_100)
        out["gpus_per_move_at_100"] = (
            curve.rescued_gpus_at_100 / curve.moved_at_100 if curve.moved_at_100 else 0.0
        )
    return out
