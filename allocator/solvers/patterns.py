"""The pattern linear program of GPU packing, and the net values the pattern rule packs by.

A *pattern* is what one GPU can hold: a multiset of item sizes (milli-GPU, a whole GPU being
1000) summing to at most 1000. Given ``G`` GPUs and ``n_s`` items of each size ``s``, the linear
program (Gilmore and Gomory, Operations Research 9, 1961)

    max sum_p x_p |p|   s.t.   sum_p x_p <= G,   sum_p a_sp x_p <= n_s,   x >= 0

packs the most milli; it is solved by column generation (GLOP for the restricted program, a
bounded knapsack for the best new pattern). Its dual prices ``y_s`` say what one more item of
size ``s`` would add; an item's *net value* ``w_s = s - y_s`` is what it is worth to a GPU when
GPUs are what is scarce (every pattern of the optimum adds up to the same total net value, the
price of a GPU). The simulator's proven ceiling (:mod:`allocator.sim.bound`) solves the same
program over the arrived items and certifies it; the pattern rule (``packing="pattern"``, the
C++ core's ``gpualloc/pattern.hpp``) places shares where they lose the least of that value, with
the values of :func:`demand_values`: the program over a demand *mix* scaled to fill the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from allocator.solvers.lp import maximize

__all__ = ["PatternProgram", "best_pattern", "demand_values", "solve_patterns"]

_BIN = 1000


def best_pattern(
    sizes: np.ndarray, counts: np.ndarray, prices: np.ndarray
) -> tuple[float, np.ndarray]:
    """The pattern maximising sum over its items of (size - price): a bounded knapsack (at most
    ``counts`` copies of each size) over capacity 0..1000 by dynamic programming. Returns (its
    profit, copies per size)."""
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


@dataclass(frozen=True, slots=True)
class PatternProgram:
    """The program's optimum: ``sizes`` (ascending) with their ``prices`` (duals, clipped to
    0..size), the ``gpu_price`` (dual of the GPU row), the patterns generated (``columns``,
    copies per size) and how many GPUs hold each (``x``), and the milli packed."""

    sizes: np.ndarray
    prices: np.ndarray
    gpu_price: float
    columns: tuple[np.ndarray, ...]
    x: np.ndarray
    objective: float

    def net_values(self) -> dict[int, float]:
        """``w_s = s - y_s`` per size (>= 0, at most the size)."""
        return {int(s): float(s) - float(y) for s, y in zip(self.sizes, self.prices, strict=True)}


def solve_patterns(
    sizes: np.ndarray,
    counts: np.ndarray,
    gpus: float,
    *,
    price_of: Callable[[np.ndarray], np.ndarray] | None = None,
    max_columns: int = 10_000,
) -> PatternProgram:
    """Solve the pattern program for ``counts[i]`` items (any number >= 0, fractions allowed) of
    ``sizes[i]`` milli (distinct, 1..1000) into ``gpus`` GPUs by column generation.

    ``price_of`` (optional) maps the solver's duals of the item rows to the prices the next
    pattern is priced with (the ceiling rounds them to an exact grid); by default they are
    clipped to 0..size. Stops when no pattern gains at those prices, or repeats one."""
    s = np.asarray(sizes, dtype=np.int64)
    n = np.asarray(counts, dtype=np.float64)
    if s.ndim != 1 or n.shape != s.shape:
        raise ValueError("sizes and counts: need two one-dimensional arrays of one length")
    if s.size == 0:
        raise ValueError("sizes: need at least one size")
    if int(s.min()) < 1 or int(s.max()) > _BIN or len(np.unique(s)) != len(s):
        raise ValueError(f"sizes: need distinct sizes in 1..{_BIN}")
    if not np.all(np.isfinite(n)) or (n < 0).any():
        raise ValueError("counts: need finite counts >= 0")
    if not (np.isfinite(gpus) and gpus > 0):
        raise ValueError(f"gpus: need a positive number of GPUs, got {gpus}")
    order = np.argsort(s)
    s, n = s[order], n[order]
    k = len(s)

    def clip(duals: np.ndarray) -> np.ndarray:
        return np.asarray(np.minimum(np.maximum(duals, 0.0), s.astype(np.float64)))

    to_prices = price_of if price_of is not None else clip
    # Restricted program: one pattern per size holding as many copies as fit.
    columns = [
        np.eye(k, dtype=np.int64)[i] * max(1, min(int(n[i]), _BIN // int(s[i]))) for i in range(k)
    ]
    b = np.concatenate([[float(gpus)], n])
    for _ in range(max_columns):
        cols = np.array(columns, dtype=np.float64).T
        a = np.vstack([np.ones(cols.shape[1]), cols])
        lp = maximize(s.astype(np.float64) @ cols, a, b)
        prices = np.asarray(to_prices(lp.duals[1:]), dtype=np.float64)
        profit, pattern = best_pattern(s, np.maximum(n, 1.0), prices)
        if profit <= lp.duals[0] + 1e-7 or any(np.array_equal(pattern, p) for p in columns):
            break
        columns.append(pattern)
    return PatternProgram(
        sizes=s,
        prices=prices,
        gpu_price=float(max(lp.duals[0], 0.0)),
        columns=tuple(columns),
        x=lp.x,
        objective=float(lp.objective),
    )


def demand_values(
    milli: np.ndarray, gpus: np.ndarray, weight: np.ndarray, cluster_gpus: int
) -> dict[int, float]:
    """Net values for the pattern rule from a demand mix: pod shapes asking ``gpus[i]`` GPUs of
    ``milli[i]`` each (a share: one GPU below 1000; shapes without GPUs are left out), with
    frequencies ``weight[i]``. The mix is scaled until it asks for exactly the cluster's
    ``cluster_gpus`` GPUs (the FGD experiment's state at 100% arrived, where GPUs start to be
    scarce), and the pattern program over those items gives each size its net value. Empty when
    the mix asks for no GPU."""
    m = np.asarray(milli, dtype=np.int64)
    g = np.asarray(gpus, dtype=np.int64)
    w = np.asarray(weight, dtype=np.float64)
    if not (m.shape == g.shape == w.shape) or m.ndim != 1:
        raise ValueError("milli, gpus and weight: need one-dimensional arrays of one length")
    if (w < 0).any() or not np.all(np.isfinite(w)):
        raise ValueError("weight: need finite weights >= 0")
    if cluster_gpus <= 0:
        raise ValueError(f"cluster_gpus: need a positive count, got {cluster_gpus}")
    items: dict[int, float] = {}
    for mi, gi, wi in zip(m.tolist(), g.tolist(), w.tolist(), strict=True):
        if gi <= 0 or mi <= 0 or wi <= 0:
            continue
        size = min(int(mi), _BIN)
        items[size] = items.get(size, 0.0) + wi * gi
    total = sum(size * c for size, c in items.items())
    if total <= 0:
        return {}
    scale = cluster_gpus * _BIN / total
    sizes = np.array(sorted(items), dtype=np.int64)
    counts = np.array([items[int(x)] * scale for x in sizes])
    return solve_patterns(sizes, counts, float(cluster_gpus)).net_values()
