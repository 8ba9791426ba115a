"""Type stubs for the C++ core (cpp/bindings): greedy, local search, payments, loss reasons.

Bulk data crosses as dicts of one-dimensional numpy arrays; allocator.solvers.native builds them
(see its ``_lower`` and ``_alloc_to_arrays``). Bad input raises ValueError naming the field.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_MIG_UNITS: int
MAX_PROFILES: int

ProblemArrays = dict[str, npt.NDArray[Any]]
AllocationArrays = dict[str, Any]

def validate_problem(data: ProblemArrays) -> None:
    """Lower and validate a problem dict; raises ValueError naming the bad field."""

class Engine:
    """One lowered problem. ``alpha`` is the size exponent of the ranking score."""

    def __init__(self, data: ProblemArrays, alpha: float = 0.75) -> None: ...
    def greedy(self) -> AllocationArrays:
        """Greedy allocation: win_bid, win_alt, win_replica_offsets, pl_*, evicted, welfare."""
    def local(
        self,
        start: AllocationArrays,
        time_limit: float,
        seed: int,
        max_iterations: int = -1,
        patience: int = 0,
    ) -> AllocationArrays:
        """Local search from ``start``; adds iterations, improvements and seconds."""
    def critical_payments(self, alloc: AllocationArrays) -> npt.NDArray[np.float64]:
        """Payment per bid (0 for losers) of any feasible allocation."""
    def explain(self, alloc: AllocationArrays) -> list[tuple[int, str, dict[str, float], int]]:
        """(bid, reason, detail, model index or -1) for every losing bid."""
    def score(self, alt: int) -> float:
        """Ranking score of a global alternative index."""
    def welfare(self, alloc: AllocationArrays) -> float:
        """Welfare of an allocation after loading (and checking) it."""
