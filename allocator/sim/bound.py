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

  solved by column generation (a small dense simplex for the restricted program, a bounded
  knapsack for the best new pattern).
- **Certificate.** The bound returned is not the simplex's objective but the value of the dual
  solution it yields, made feasible exactly: for prices ``y_s >= 0`` per size, every pattern
  satisfies ``|p| - sum_s a_sp y_s <= y_0`` with ``y_0`` the knapsack's maximum, so any packing
  into ``G`` GPUs totals at most ``G max(y_0, 0) + sum_s n_s y_s``. That holds for every ``y >= 0``;
  the simplex only makes it small. Its validity does not rest on the simplex being right.

On openb's default trace this is what strands capacity: an 810-milli share leaves 190 that only
the rare shares of 190 or less can fill, and the 470-milli shares pair to 940. The bound is a
ceiling, not a packing: the best policy may stay below it. It is at most every bound from dual
feasible functions (Fekete and Schepers 2001), which are dual solutions of the same program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.sim.replay import arrival_order
from allocator.sim.traces import PodTrace

__all__ = ["AllocationBound", "allocation_bound", "bound_at_arrived"]

_BIN = 1000
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class AllocationBound:
    """The bound in milli-GPU and as a percentage of capacity; ``prices`` are the dual prices
    per item size (milli) that certify it, ``packing`` the linear program's best fractional
    packing as (pattern of sizes, number of GPUs holding it), most used first."""

    milli: float
    percent: float
    prices: dict[int, float]
    packing: tuple[tuple[tuple[int, ...], float], ...]


def _lp_max(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """max c.x s.t. a x <= b, x >= 0 with b >= 0 (the slack basis is feasible): a dense tableau
    simplex with Bland's rule, which cannot cycle. Returns (x, duals of the rows, objective)."""
    m, n = a.shape
    t = np.zeros((m + 1, n + m + 1))
    t[:m, :n] = a
    t[:m, n : n + m] = np.eye(m)
    t[:m, -1] = b
    t[m, :n] = -c
    basis = list(range(n, n + m))
    for _ in range(100_000):
        entering = np.flatnonzero(t[m, :-1] < -_EPS)
        if entering.size == 0:
            break
        j = int(entering[0])
        col = t[:m, j]
        rows = np.flatnonzero(col > _EPS)
        if rows.size == 0:  # cannot happen here: every column uses the bounded GPU row
            raise ArithmeticError("pattern program unbounded")
        ratios = t[rows, -1] / col[rows]
        best = ratios.min()
        ties = rows[ratios <= best + _EPS]
        r = int(min(ties, key=lambda i: basis[i]))
        t[r] /= t[r, j]
        for i in range(m + 1):
            if i != r and t[i, j] != 0.0:
                t[i] -= t[i, j] * t[r]
        basis[r] = j
    else:
        raise ArithmeticError("pattern program: simplex did not converge")
    x = np.zeros(n)
    for i, var in enumerate(basis):
        if var < n:
            x[var] = t[i, -1]
    return x, t[m, n : n + m].copy(), float(t[m, -1])


def _best_pattern(
    sizes: np.ndarray, counts: np.ndarray, prices: np.ndarray
) -> tuple[float, np.ndarray]:
    """The pattern maximising sum over its items of (size - price): a bounded knapsack over
    capacity 0..1000 by dynamic programming. Returns (its profit, copies per size)."""
    k = len(sizes)
    profit = sizes.astype(np.float64) - prices
    dp = np.zeros(_BIN + 1)
    choice = np.zeros((k, _BIN + 1), dtype=np.int64)
    for i in range(k):
        if profit[i] <= 0.0:
            continue
        s = int(sizes[i])
        best = dp.copy()
        for j in range(1, min(int(counts[i]), _BIN // s) + 1):
            cand = np.full(_BIN + 1, -np.inf)
            cand[j * s :] = dp[: _BIN + 1 - j * s] + j * profit[i]
            better = cand > best
            best[better] = cand[better]
            choice[i, better] = j
        dp = best
    c = int(np.argmax(dp))
    value = float(dp[c])
    copies = np.zeros(k, dtype=np.int64)
    for i in range(k - 1, -1, -1):
        j = int(choice[i, c])
        copies[i] = j
        c -= j * int(sizes[i])
    return value, copies


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
        x, duals, _ = _lp_max(distinct.astype(np.float64) @ cols, a, b)
        prices = np.maximum(duals[1:], 0.0)
        profit, pattern = _best_pattern(distinct, counts, prices)
        if profit <= duals[0] + 1e-7 or any(np.array_equal(pattern, p) for p in columns):
            break
        columns.append(pattern)
    # ``profit`` is the knapsack's exact maximum at the final prices: the certificate's y_0.
    certified = gpus * max(profit, 0.0) + float(counts @ prices)
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
