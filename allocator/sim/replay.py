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

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from allocator import _core
from allocator.sim.traces import ClusterTrace, PodTrace

__all__ = [
    "PLACEMENT_POLICIES",
    "Curve",
    "arrival_order",
    "arrival_table",
    "curve_points",
    "new_cluster",
    "pod_kind",
    "run_replay",
    "summarize",
    "typical_workload",
]

#: Policies that place one pod at a time by a node score (C++ core, allocator._core.SimCluster).
PLACEMENT_POLICIES = ("random", "fifo", "bestfit", "dotprod", "gpupacking", "fgd", "kai")

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
    to larger CPU, then milli, then GPU count, then mask (the authors' order).
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
        "memory_mib": np.zeros(len(chosen), dtype=np.int64),
        "gpus": np.array([s[2] for s, _ in chosen], dtype=np.int64),
        "milli": np.array([s[1] for s, _ in chosen], dtype=np.int64),
        "models": np.array([s[3] for s, _ in chosen], dtype=np.uint64),
        "weight": np.array([n / total for _, n in chosen], dtype=np.float64),
    }


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


def run_replay(
    cluster: ClusterTrace,
    pods: PodTrace,
    policy: str,
    seed: int,
    *,
    mode: str = "online",
    batch: int = 100,
    local_search: bool = False,
    time_limit: float = 1.0,
    ties: str = "first",
    fragment_scale: float = 1000.0,
    alpha: float = 0.75,
    limit: int | None = None,
    on_round: Callable[[_core.SimCluster, Sequence[int], list[object]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Curve:
    """Replay the FGD experiment for one policy and seed; ``policy`` is a placement policy or
    ``auction`` (``mode`` online or batch). ``on_round`` (auction only) sees the cluster, the
    pods of each round and their placements after the round is applied."""
    import time

    if policy not in (*PLACEMENT_POLICIES, "auction"):
        raise ValueError(f"policy: unknown {policy!r}")
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
    sim = new_cluster(cluster, seed, ties=ties)
    tw = typical_workload(pods)
    sim.set_workload(**tw)
    # Clones of one pod share its trace row: every arrival gets its own row in the pod table.
    sim.set_pods(
        pods.cpu_milli[order],
        pods.memory_mib[order],
        pods.gpus[order],
        pods.milli[order],
        pods.models[order],
    )
    request = pods.gpu_milli_total[order]
    kinds = [
        pod_kind(int(g), int(m)) for g, m in zip(pods.gpus[order], pods.milli[order], strict=True)
    ]
    values = request.astype(np.float64) / 1000.0 + 1e-3  # GPU-equivalents (CPU-only: a token)
    curve = Curve(policy=policy if policy != "auction" else f"auction-{mode}", seed=seed)
    curve.pods = len(order)
    failed: Counter[str] = Counter()
    arrived = 0
    total = float(capacity)

    def record() -> None:
        used = float(sim.used_milli)
        idle = total - used
        frag = sim.fragment_milli()
        curve.arrived.append(100.0 * arrived / total)
        curve.allocated.append(100.0 * used / total)
        curve.fragment.append(100.0 * frag / total)
        curve.frag_rate.append(100.0 * frag / idle if idle > 0 else 0.0)

    pending: list[int] = []
    round_size = 1 if (policy == "auction" and mode == "online") else batch
    for k in range(len(order)):
        arrived += int(request[k])
        if policy != "auction":
            if sim.place(k, policy) is None:
                failed[kinds[k]] += 1
            else:
                curve.placed += 1
            record()
        else:
            pending.append(k)
            if len(pending) >= round_size or k == len(order) - 1:
                t0 = time.perf_counter()
                got = sim.auction_round(
                    np.array(pending, dtype=np.int64),
                    values[pending],
                    _core.SimAuctionOptions(
                        engine=_core.EngineOptions(alpha=alpha, fragment_scale=fragment_scale),
                        local_search=local_search,
                        time_limit_s=time_limit,
                        seed=seed + curve.rounds,
                    ),
                )
                curve.solver_seconds += time.perf_counter() - t0
                curve.rounds += 1
                for i, where in zip(pending, got, strict=True):
                    if where is None:
                        failed[kinds[i]] += 1
                    else:
                        curve.placed += 1
                if on_round is not None:
                    on_round(sim, list(pending), list(got))
                pending = []
            record()
        if progress is not None:
            progress(k + 1)
    curve.failed = dict(failed)
    return curve


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
    """The headline figures of one run."""
    return {
        "alloc_at_100": _at(curve.arrived, curve.allocated, 100),
        "alloc_at_130": _at(curve.arrived, curve.allocated, 130),
        "frag_rate_at_90": _at(curve.arrived, curve.frag_rate, 90),
        "fragment_at_90": _at(curve.arrived, curve.fragment, 90),
    }
