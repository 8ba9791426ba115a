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
    def critical_payments(
        self, alloc: AllocationArrays, threads: int = 1
    ) -> npt.NDArray[np.float64]:
        """Payment per bid (0 for losers) of any feasible allocation."""
    def explain(self, alloc: AllocationArrays) -> list[tuple[int, str, dict[str, float], int]]:
        """(bid, reason, detail, model index or -1) for every losing bid."""
    def score(self, alt: int) -> float:
        """Ranking score of a global alternative index."""
    def welfare(self, alloc: AllocationArrays) -> float:
        """Welfare of an allocation after loading (and checking) it."""

Placed = tuple[int, list[int]] | None

class SimCluster:
    """The simulator's cluster (nodes with CPU, memory, GPUs in milli) and its policies."""

    def __init__(
        self,
        cpu_milli: npt.ArrayLike,
        memory_mib: npt.ArrayLike,
        model: npt.ArrayLike,
        gpus: npt.ArrayLike,
        model_memory_gb: npt.ArrayLike | list[float],
        seed: int = 0,
    ) -> None: ...
    def set_workload(
        self,
        cpu_milli: npt.ArrayLike,
        memory_mib: npt.ArrayLike,
        gpus: npt.ArrayLike,
        milli: npt.ArrayLike,
        models: npt.ArrayLike,
        weight: npt.ArrayLike,
    ) -> None:
        """FGD's target workload (shapes and weights)."""
    def set_pods(
        self,
        cpu_milli: npt.ArrayLike,
        memory_mib: npt.ArrayLike,
        gpus: npt.ArrayLike,
        milli: npt.ArrayLike,
        models: npt.ArrayLike,
    ) -> None:
        """The pod table; pods are then referred to by row."""
    def place(self, pod: int, policy: str) -> Placed:
        """Place pod ``pod`` by ``policy`` and apply it; (node, [gpu, ...]) or None."""
    def assign(self, pod: int, node: int, gpus: list[int]) -> None:
        """Apply a placement chosen elsewhere (ValueError if it does not fit)."""
    def release(self, pod: int) -> None:
        """Give back what pod ``pod`` holds."""
    def auction_round(
        self,
        pods: npt.ArrayLike,
        values: npt.ArrayLike,
        local_search: bool = False,
        time_limit: float = 1.0,
        seed: int = 0,
        alpha: float = 0.75,
        workload_hint: bool = True,
        fragment_scale: float = 1000.0,
    ) -> list[Placed]:
        """Clear one round of the auction engine over ``pods``; one placement or None each."""
    def set_exact_scores(self, exact: bool) -> None: ...
    def set_random_ties(self, random: bool) -> None: ...
    def set_node_order(self, order: npt.ArrayLike) -> None: ...
    def fragment_milli(self) -> float: ...
    def node_fragment(self, n: int) -> float: ...
    def gpu_free_milli(self) -> npt.NDArray[np.int64]: ...
    def node_free(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
    @property
    def used_milli(self) -> int: ...
    @property
    def total_milli(self) -> int: ...
