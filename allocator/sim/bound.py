"""A proven upper bound on the GPU allocation ratio any policy can reach on a set of pods.

Used to judge the FGD experiment's figures: at a given arrived workload, no policy (online,
batch, or clairvoyant and offline) allocates more than the largest total of GPU milli that the
arrived pods can be packed into the cluster's GPUs. This module bounds that total from above:

- **Relaxation.** Nodes, CPU, memory and GPU models are ignored, and a pod asking for ``n`` GPUs
  of ``m`` milli each becomes ``n`` independent items of size ``m`` (whole GPUs: 1000). Every
  packing of pods is a packing of these items into ``G`` bins of 1000, so the relaxation's
  optimum is at least the real one.
- **Pattern linear program** (Gilmore and Gomory, Operations Research 9, 1961). A *pattern* is
  what one GPU can hold: a multiset of item sizes summing to at most 1000. The relaxation's
  optimum is the best choice of ``G`` patterns that uses no size more often than it arrived;
  dropping integrality gives the linear program

      max sum_p x_p |p|   s.t.   sum_p x_p <= G,   sum_p a_sp x_p <= n_s,   x >= 0,

  solved by column generation (OR-Tools' GLOP for the restricted program, through
  :func:`allocator.solvers.lp.maximize`; a bounded knapsack for the best new pattern,
  :func:`allocator.solvers.patterns.best_pattern`, which the pattern rule's values share).
- **Certificate.** The bound returned is not the linear program's objective but the value of the
  dual solution it yields, made feasible exactly: for prices ``y_s >= 0`` per size, every pattern
  satisfies ``|p| - sum_s a_sp y_s <= y_0`` with ``y_0`` the knapsack's maximum, so any packing
  into ``G`` GPUs totals at most ``G max(y_0, 0) + sum_s n_s y_s``. That holds for every ``y >= 0``;
  the linear program only makes it small, and its validity does not rest on the solver being
  right or on its tolerances. The prices are rounded up to multiples of ``2**-30`` (and capped
  at their size, which never raises the bound), so every sum the knapsack forms is exact in
  floating point; the final sum is taken in rational arithmetic and rounded up.

On openb's default trace this is what strands capacity: an 810-milli share leaves 190 that only
the rare shares of 190 or less can fill, and the 470-milli shares pair to 940. The bound is a
ceiling, not a packing: the best policy may stay below it. It is at most every bound from dual
feasible functions (Fekete and Schepers 2001), which are dual solutions of the same program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from allocator.sim.replay import arrival_order
from allocator.sim.traces import PodTrace
from allocator.solvers.lp import maximize
from allocator.solvers.patterns import best_pattern as _best_pattern

__all__ = ["AllocationBound", "allocation_bound", "bound_at_arrived"]

_BIN = 1000
#: Prices are rounded up to multiples of this: then a price, a size less a price and any sum of
#: at most 1000 of them (magnitudes <= 1000) need at most 40 bits, so the knapsack adds exactly.
_GRID = 2.0**-30


@dataclass(frozen=True, slots=True)
class AllocationBound:
    """The bound in milli-GPU and as a percentage of capacity; ``prices`` are the dual prices
    per item size (milli) that certify it, ``packing`` the linear program's best fractional
    packing as (pattern of sizes, number of GPUs holding it), most used first."""

    milli: float
    percent: float
    prices: dict[int, float]
    packing: tuple[tuple[tuple[int, ...], float], ...]


def _prices(duals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The certificate's prices from the solver's duals: at least 0, at most the size (a price
    above it only adds to the bound, since no pattern then gains from the item), rounded up to
    multiples of :data:`_GRID`. Any ``y >= 0`` gives a valid bound; these give an exact one."""
    capped = np.minimum(np.maximum(duals, 0.0), sizes.astype(np.float64))
    return np.asarray(np.ceil(capped / _GRID) * _GRID, dtype=np.float64)


def _certified(gpus: int, profit: float, counts: np.ndarray, prices: np.ndarray) -> float:
    """``G max(y_0, 0) + sum_s n_s y_s`` in rational arithmetic, rounded up to a float."""
    exact = Fraction(gpus) * Fraction(max(profit, 0.0)) + sum(
        (Fraction(int(n)) * Fraction(float(y)) for n, y in zip(counts, prices, strict=True)),
        Fraction(0),
    )
    value = float(exact)
    return value if Fraction(value) >= exact else math.nextafter(value, math.inf)


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
    if s.size == 0:
        return AllocationBound(0.0, 0.0, {}, ())
    distinct, counts = np.unique(s, return_counts=True)
    k = len(distinct)
    # Restricted program: start from one pattern per size holding as many copies as fit.
    columns = [
        np.eye(k, dtype=np.int64)[i] * min(int(counts[i]), _BIN // int(distinct[i]))
        for i in range(k)
    ]
    b = np.concatenate([[float(gpus)], counts.astype(np.float64)])
    for _ in range(10_000):
        cols = np.array(columns, dtype=np.float64).T
        a = np.vstack([np.ones(cols.shape[1]), cols])
        lp = maximize(distinct.astype(np.float64) @ cols, a, b)
        x, duals = lp.x, lp.duals
        prices = _prices(duals[1:], distinct)
        profit, pattern = _best_pattern(distinct, counts, prices)
        if profit <= duals[0] + 1e-7 or any(np.array_equal(pattern, p) for p in columns):
            break
        columns.append(pattern)
    # ``profit`` is the knapsack's exact maximum at the final prices: the certificate's y_0.
    certified = _certified(gpus, profit, counts, prices)
    best = min(certified, float(s.sum()), capacity)
    used = sorted(
        (
            (tuple(int(v) for v in np.repeat(distinct, col)[::-1]), float(x[i]))
            for i, col in enumerate(columns)
            if x[i] > 1e-6
        ),
        key=lambda pattern_gpus: -pattern_gpus[1],
    )
    return AllocationBound(
        milli=best,
        percent=100.0 * best / capacity,
        prices={int(v): float(p) for v, p in zip(distinct, prices, strict=True)},
        packing=tuple(used),
    )


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
