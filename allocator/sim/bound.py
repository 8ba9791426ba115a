"""A proven upper bound on the GPU allocation ratio any policy can reach on a set of pods.

Used to judge the FGD experiment's figures: at a given arrived workload, no policy (online,
batch, or clairvoyant and offline) allocates more than the largest total of GPU milli that the
arrived pods can be packed into the cluster's GPUs. This module bounds that total from above
with a relaxation and dual feasible functions:

- **Relaxation.** Nodes, CPU, memory and GPU models are ignored, and a pod asking for ``n`` GPUs
  of ``m`` milli each becomes ``n`` independent items of size ``m`` (whole GPUs: 1000). Every
  packing of pods is a packing of these items into ``G`` bins of 1000, so the relaxation's
  optimum is at least the real one.
- **Dual feasible functions** (Fekete and Schepers, Math. Programming 91, 2001). A function
  ``u`` with ``sum u(s_i) <= 1000`` for every set of sizes with ``sum s_i <= 1000`` turns any
  packing into ``G`` bins into a set with ``sum u(s_i) <= 1000 G``. We use the family
  ``u_t(s) = 1000 if s > 1000 - t; s if t <= s <= 1000 - t; 0 if s < t`` for ``t`` in
  ``1..500`` (a bin holding an item above ``1000 - t`` has room for items below ``t`` only).
  For each ``u_t`` the largest ``sum s_i`` subject to ``sum u_t(s_i) <= 1000 G`` is bounded by
  its fractional knapsack (items by ``s / u_t(s)``, best first; items with ``u_t = 0`` free);
  the bound is the least of those and of ``min(sum s_i, 1000 G)``.

On openb's default trace this is what strands capacity: 810-milli shares weigh a whole GPU under
``u_191`` while only shares below 191 milli can fill what they leave. The bound is a ceiling,
not a packing: the best policy may stay below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.sim.replay import arrival_order
from allocator.sim.traces import PodTrace

__all__ = ["AllocationBound", "allocation_bound", "bound_at_arrived"]

_BIN = 1000


@dataclass(frozen=True, slots=True)
class AllocationBound:
    """The bound in milli-GPU, as a percentage of capacity, and the ``t`` of ``u_t`` that gave it
    (0: the trivial ``min(demand, capacity)``)."""

    milli: float
    percent: float
    threshold: int


def allocation_bound(sizes: np.ndarray, gpus: int) -> AllocationBound:
    """Upper bound on the total size of items (milli, 1..1000 each) packable into ``gpus`` GPUs."""
    if gpus <= 0:
        raise ValueError(f"gpus: need at least one GPU, got {gpus}")
    s = np.asarray(sizes, dtype=np.int64)
    if s.ndim != 1:
        raise ValueError("sizes: need a one-dimensional array")
    if s.size and (int(s.min()) < 1 or int(s.max()) > _BIN):
        raise ValueError(f"sizes: every item must be 1..{_BIN} milli")
    capacity = float(gpus * _BIN)
    best = min(float(s.sum()), capacity)
    best_t = 0
    for t in range(1, _BIN // 2 + 1):
        weight = np.where(s > _BIN - t, _BIN, np.where(s >= t, s, 0))
        free = weight == 0
        value = float(s[free].sum())
        w = weight[~free].astype(np.float64)
        v = s[~free].astype(np.float64)
        order = np.argsort(-(v / w), kind="stable")
        w, v = w[order], v[order]
        filled = np.cumsum(w)
        k = int(np.searchsorted(filled, capacity, side="right"))
        value += float(v[:k].sum())
        if k < len(w):
            room = capacity - (float(filled[k - 1]) if k > 0 else 0.0)
            value += float(v[k]) * room / float(w[k])
        if value < best:
            best, best_t = value, t
    return AllocationBound(milli=best, percent=100.0 * best / capacity, threshold=best_t)


def _items(pods: PodTrace, index: np.ndarray) -> np.ndarray:
    """The relaxation's items of the pods at ``index``: one per requested GPU."""
    sizes = np.repeat(pods.milli[index], pods.gpus[index])
    return np.asarray(sizes[sizes > 0], dtype=np.int64)


def bound_at_arrived(
    pods: PodTrace, gpus: int, seed: int, arrived_percent: float = 100.0
) -> AllocationBound:
    """Bound for the FGD experiment's row at ``arrived_percent`` (the seeded arrival order of
    :func:`allocator.sim.replay.arrival_order`). The experiment averages the rows whose arrived
    percentage rounds to it, so the bound is taken for the longest of those prefixes (a longer
    prefix never has a lower bound)."""
    capacity = gpus * _BIN
    order = arrival_order(pods, capacity, seed)
    arrived = np.cumsum(pods.gpu_milli_total[order]) * 100.0 / capacity
    k = int(np.searchsorted(arrived, arrived_percent + 0.5, side="right"))
    return allocation_bound(_items(pods, order[:k]), gpus)
