"""Type stubs for the C++ core (cpp/bindings): greedy, local search, payments, loss reasons.

A problem and allocations cross as structs of named one-dimensional numpy columns
(cpp/bindings/columns.hpp lists them; allocator.solvers.native builds them). Each struct is
constructed with keyword arguments only, one per attribute below (those with a default may be
left out); its ``FIELDS`` maps every attribute to its type and tests/test_native.py holds this
file to it. Bad input raises ValueError naming the field, an unknown keyword TypeError.
"""

from collections.abc import Sequence
from typing import ClassVar, dataclass_transform

import numpy as np
import numpy.typing as npt

MAX_MIG_UNITS: int
MAX_PROFILES: int

# ---------------------------------------------------------------- enums (cpp/bindings/enums.hpp)

class _Enum:
    """A pybind11 enum: members as class attributes, ``name`` and ``value`` on each."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __hash__(self) -> int: ...

class GpuMode(_Enum):
    """How a GPU is offered (gpu_mode column)."""

    __members__: ClassVar[dict[str, GpuMode]]
    Whole: ClassVar[GpuMode]
    Shared: ClassVar[GpuMode]
    Mig: ClassVar[GpuMode]

class UnitKind(_Enum):
    """What one replica needs (alt_kind and placement kind columns)."""

    __members__: ClassVar[dict[str, UnitKind]]
    Whole: ClassVar[UnitKind]
    Mig: ClassVar[UnitKind]
    Share: ClassVar[UnitKind]

class Locality(_Enum):
    """Locality of a gang, tightest first (alt_locality column)."""

    __members__: ClassVar[dict[str, Locality]]
    Gpu: ClassVar[Locality]
    Nvlink: ClassVar[Locality]
    Node: ClassVar[Locality]
    Rack: ClassVar[Locality]
    Zone: ClassVar[Locality]
    Any: ClassVar[Locality]

class LossReason(_Enum):
    """Why a bid lost (Engine.explain)."""

    __members__: ClassVar[dict[str, LossReason]]
    Outbid: ClassVar[LossReason]
    DoesNotFit: ClassVar[LossReason]
    OverBudget: ClassVar[LossReason]
    BelowReserve: ClassVar[LossReason]

# ---------------------------------------------------------------- columns (columns.hpp)

@dataclass_transform(kw_only_default=True, eq_default=False)
class _Columns:
    """Keyword-constructed: one argument per annotated attribute."""

    FIELDS: ClassVar[dict[str, str]]

class PlacementColumns(_Columns):
    """Replicas: node, kind (UnitKind values), MIG profile and start (-1: none), milli; the GPUs
    of replica r are gpus[gpu_offsets[r]:gpu_offsets[r + 1]] (global GPU indices)."""

    node: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int64]
    profile: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    milli: npt.NDArray[np.int64]
    gpu_offsets: npt.NDArray[np.int64]
    gpus: npt.NDArray[np.int64]

class ProblemColumns(_Columns):
    """A lowered round: per model, MIG profile, node, GPU, outside MIG hold, wallet, bid,
    alternative and incumbent (see allocator.solvers.native and gpualloc/problem.hpp)."""

    model_memory_gb: npt.NDArray[np.float64]
    model_mig_units: npt.NDArray[np.int64]
    model_compute_units: npt.NDArray[np.int64]
    model_reserve: npt.NDArray[np.float64]
    model_whole_equivalent: npt.NDArray[np.float64]
    profile_model: npt.NDArray[np.int64]
    profile_compute: npt.NDArray[np.int64]
    profile_size: npt.NDArray[np.int64]
    profile_starts_mask: npt.NDArray[np.int64]
    profile_max_count: npt.NDArray[np.int64]
    profile_media: npt.NDArray[np.int64]
    node_cpu_milli: npt.NDArray[np.int64]
    node_memory_mib: npt.NDArray[np.int64]
    node_rack: npt.NDArray[np.int64]
    node_zone: npt.NDArray[np.int64]
    gpu_node: npt.NDArray[np.int64]
    gpu_device: npt.NDArray[np.int64]
    gpu_model: npt.NDArray[np.int64]
    gpu_mode: npt.NDArray[np.int64]
    gpu_nvlink: npt.NDArray[np.int64]
    gpu_used_milli: npt.NDArray[np.int64]
    hold_gpu: npt.NDArray[np.int64]
    hold_profile: npt.NDArray[np.int64]
    hold_start: npt.NDArray[np.int64]
    gpu_fixed_layout: npt.NDArray[np.int64]
    layout_gpu: npt.NDArray[np.int64]
    layout_profile: npt.NDArray[np.int64]
    layout_start: npt.NDArray[np.int64]
    wallet_balance: npt.NDArray[np.float64]
    bid_wallet: npt.NDArray[np.int64]
    bid_bidder: npt.NDArray[np.int64]
    alt_bid: npt.NDArray[np.int64]
    alt_value: npt.NDArray[np.float64]
    alt_kind: npt.NDArray[np.int64]
    alt_gpus: npt.NDArray[np.int64]
    alt_milli: npt.NDArray[np.int64]
    alt_replicas: npt.NDArray[np.int64]
    alt_cpu_milli: npt.NDArray[np.int64]
    alt_memory_mib: npt.NDArray[np.int64]
    alt_min_gpu_memory_gb: npt.NDArray[np.float64]
    alt_locality: npt.NDArray[np.int64]
    alt_model_offsets: npt.NDArray[np.int64]
    alt_models: npt.NDArray[np.int64]
    alt_profiles: npt.NDArray[np.int64]
    inc_value: npt.NDArray[np.float64]
    inc_preemption_cost: npt.NDArray[np.float64]
    inc_preemptible: npt.NDArray[np.int64]
    inc_cpu_milli: npt.NDArray[np.int64]
    inc_memory_mib: npt.NDArray[np.int64]
    inc_placement_offsets: npt.NDArray[np.int64]
    inc_placements: PlacementColumns

class AllocationColumns(_Columns):
    """Winners in bid order (win_alt: alternative within the bid; replicas
    placements[win_replica_offsets[w]:win_replica_offsets[w + 1]]), evicted incumbents, and the
    engine's figures (welfare; the local search's moves, gains and seconds)."""

    win_bid: npt.NDArray[np.int64]
    win_alt: npt.NDArray[np.int64]
    win_replica_offsets: npt.NDArray[np.int64]
    placements: PlacementColumns
    evicted: npt.NDArray[np.int64]
    welfare: float = ...
    iterations: int = ...
    improvements: int = ...
    seconds: float = ...

def validate_problem(problem: ProblemColumns) -> None:
    """Lower and validate a problem; raises ValueError naming the bad field."""

# ---------------------------------------------------------------- engine (auction.cpp)

class Workload:
    """FGD's target workload: task shapes and their weights (normalised)."""

    def __init__(
        self,
        *,
        cpu_milli: npt.ArrayLike,
        gpus: npt.ArrayLike,
        milli: npt.ArrayLike,
        models: npt.ArrayLike,
        weight: npt.ArrayLike,
        memory_mib: npt.ArrayLike | None = None,
    ) -> None: ...
    def __len__(self) -> int: ...

class EngineOptions:
    """Parameters of the engine (gpualloc::EngineOptions, defaults from there)."""

    alpha: float
    fragment_scale: float
    node_order: list[int]
    workload: Workload
    #: ``fgd`` or ``pattern`` (gpualloc/pattern.hpp).
    packing: str
    #: The pattern rule's (size, net value) pairs, sizes ascending.
    pattern_values: list[tuple[int, float]]
    reserve_weight: float
    def __init__(
        self,
        *,
        alpha: float = ...,
        fragment_scale: float = ...,
        node_order: Sequence[int] = ...,
        workload: Workload = ...,
        packing: str = ...,
        pattern_values: Sequence[tuple[int, float]] = ...,
        reserve_weight: float = ...,
    ) -> None: ...

class Engine:
    """One lowered problem."""

    def __init__(self, problem: ProblemColumns, options: EngineOptions = ...) -> None: ...
    def greedy(self) -> AllocationColumns:
        """The greedy allocation (with its welfare)."""
    def local(
        self,
        start: AllocationColumns,
        time_limit: float,
        seed: int,
        max_iterations: int = -1,
        patience: int = 0,
    ) -> AllocationColumns:
        """Local search from ``start``; the result carries iterations, improvements, seconds."""
    def critical_payments(
        self, alloc: AllocationColumns, threads: int = 1, shortcuts: bool = True
    ) -> npt.NDArray[np.float64]:
        """Payment per bid (0 for losers) of any feasible allocation. ``shortcuts`` False (tests
        only): plain per-winner replays, none of the replay's shortcuts."""
    def critical_payments_of(
        self, alloc: AllocationColumns, bids: Sequence[int], time_budget: float
    ) -> npt.NDArray[np.float64]:
        """Critical payments of the winners ``bids`` only, in order, until ``time_budget``
        seconds have passed (NaN for those left out; the first is always replayed)."""
    def los_payments(self, alloc: AllocationColumns) -> npt.NDArray[np.float64]:
        """The ``los`` payment per bid (0 for losers), read off the greedy run; a winner greedy
        did not make the same way pays its bid."""
    def explain(
        self, alloc: AllocationColumns
    ) -> list[tuple[int, LossReason, dict[str, float], int]]:
        """(bid, reason, detail, model index or -1) for every losing bid."""
    def score(self, alt: int) -> float:
        """Ranking score of a global alternative index."""
    def welfare(self, alloc: AllocationColumns) -> float:
        """Welfare of an allocation after loading (and checking) it."""

# ---------------------------------------------------------------- simulator (sim.cpp)

Placed = tuple[int, list[int]] | None

class SimAuctionOptions:
    """Options of SimCluster.auction_round (gpualloc::SimAuctionOptions, defaults from there).
    ``engine``'s node order and (with ``workload_hint``) workload are the cluster's."""

    engine: EngineOptions
    workload_hint: bool
    local_search: bool
    time_limit_s: float
    max_iterations: int
    seed: int
    def __init__(
        self,
        *,
        engine: EngineOptions = ...,
        workload_hint: bool = ...,
        local_search: bool = ...,
        time_limit_s: float = ...,
        max_iterations: int = ...,
        seed: int = ...,
    ) -> None: ...

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
    def place_with_moves(
        self,
        pod: int,
        policy: str = ...,
        *,
        max_moves: int = ...,
        max_pod_gpus: int = ...,
        candidates: int = ...,
        max_trials: int = ...,
    ) -> tuple[tuple[int, list[int]], list[tuple[int, int, list[int]]]] | None:
        """Place pod ``pod`` by first moving at most ``max_moves`` placed pods (of at most
        ``max_pod_gpus`` GPUs; gpualloc/sim_migrate.hpp): its placement and the moves (pod, node,
        GPUs it went to), all applied; None (nothing changed) if no such plan is found."""
    def placement(self, pod: int) -> Placed:
        """Where pod ``pod`` is now (after any moves): (node, [gpu, ...]) or None."""
    def auction_round(
        self, pods: npt.ArrayLike, values: npt.ArrayLike, options: SimAuctionOptions = ...
    ) -> list[Placed]:
        """Clear one round of the auction engine over ``pods``; one placement or None each."""
    def set_pattern(self, values: Sequence[tuple[int, float]], reserve_weight: float = ...) -> None:
        """The pattern rule's (size, net value) pairs and the weight of its CPU/memory reserve."""
    @property
    def pattern_values(self) -> list[tuple[int, float]]: ...
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
