"""The immutable, validated problem of one round: cluster, wallets, bids, incumbents, reserves.

Every class here is a frozen dataclass that checks its own fields in ``__post_init__`` and raises
:class:`~allocator.model.errors.ProblemError` naming the field. :class:`Problem` checks everything
that spans objects (ids, references, MIG legality of what is already on the GPUs, overlaps).
This module does no I/O and knows nothing of solvers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from allocator.model.catalog import CATALOG, GpuModel
from allocator.model.errors import ProblemError
from allocator.model.occupancy import GpuOccupancy, NodeOccupancy, OccupancyError

__all__ = [
    "GPU_MODES",
    "LOCALITIES",
    "UNIT_KINDS",
    "Alternative",
    "Bid",
    "Gpu",
    "Incumbent",
    "MigInstance",
    "Node",
    "Placement",
    "Problem",
    "Unit",
    "Wallet",
]

#: How a GPU is offered: whole (``nvidia.com/gpu``), shared (milli-GPU shares), or MIG slices.
GPU_MODES = ("whole", "shared", "mig")
#: Per-replica unit kinds of an alternative.
UNIT_KINDS = ("whole", "mig", "share")
#: Locality of a gang, from tightest to loosest.
LOCALITIES = ("gpu", "nvlink", "node", "rack", "zone", "any")


#: Largest amount of money (values, balances, costs, prices) accepted: far above any real
#: budget, and small enough that sums and CP-SAT's scaled integers cannot overflow.
MAX_AMOUNT = 1e12
#: Largest integer accepted in any count or capacity field (exact in a double, fits int64).
MAX_INTEGER = 2**53
#: Most GPUs one replica (one pod, on one node) may ask for, and most replicas of one gang.
MAX_GPUS_PER_REPLICA = 4096
MAX_REPLICAS = 100_000


def _finite_nonneg(path: str, x: float) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ProblemError(path, f"must be a number, got {x!r}")
    if not math.isfinite(x) or x < 0:
        raise ProblemError(path, f"must be finite and >= 0, got {x!r}")
    if x > MAX_AMOUNT:
        raise ProblemError(path, f"must be at most {MAX_AMOUNT:g}, got {x!r}")


def _int_at_least(path: str, x: int, low: int) -> None:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ProblemError(path, f"must be an integer, got {x!r}")
    if x < low:
        raise ProblemError(path, f"must be >= {low}, got {x}")
    if x > MAX_INTEGER:
        raise ProblemError(path, f"must be at most 2**53, got {x}")


def _name(path: str, x: str) -> None:
    if not isinstance(x, str) or not x:
        raise ProblemError(path, f"must be a non-empty string, got {x!r}")


def _optional_name(path: str, x: str | None) -> None:
    if x is not None:
        _name(path, x)


@dataclass(frozen=True, slots=True)
class MigInstance:
    """A MIG instance that exists on a GPU: profile name and start slot."""

    profile: str
    start: int

    def __post_init__(self) -> None:
        _name("profile", self.profile)
        _int_at_least("start", self.start, 0)


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU of a node.

    Parameters
    ----------
    index
        Device index on the node (as the device plugin numbers them).
    model
        Catalog name or alias, or the name of a model in ``Problem.extra_models``.
    mode
        ``whole``, ``shared`` (fractional time-sliced shares) or ``mig``.
    nvlink
        NVLink domain id; GPUs of one node with the same id share NVLink. ``None`` means the
        node's GPUs form one domain.
    mig_instances
        MIG instances held by work outside this market (they block their slices). Free slices
        may be carved into any legal profile by the allocator.
    used_milli
        Milli-GPU already used by work outside this market (``shared`` mode only).
    layout
        The MIG instances that exist on the GPU now (``mig`` mode only), free or held by
        ``mig_instances`` and incumbents. ``None`` (the default): the GPU's free slices may be
        carved into any legal profile at no cost. With a layout, work goes on its free instances,
        or, if ``recarvable``, the round may re-carve the GPU (see :class:`Problem`).
    recarvable
        Whether the round may change ``layout`` (False: within its minimum hold time, a change
        still being applied, outside work on it, or re-carving turned off).
    """

    index: int
    model: str
    mode: str = "whole"
    nvlink: str | None = None
    mig_instances: tuple[MigInstance, ...] = ()
    used_milli: int = 0
    layout: tuple[MigInstance, ...] | None = None
    recarvable: bool = True

    def __post_init__(self) -> None:
        _int_at_least("index", self.index, 0)
        _name("model", self.model)
        _optional_name("nvlink", self.nvlink)
        if self.mode not in GPU_MODES:
            raise ProblemError("mode", f"must be one of {', '.join(GPU_MODES)}; got {self.mode!r}")
        _int_at_least("used_milli", self.used_milli, 0)
        if self.used_milli > 1000:
            raise ProblemError("used_milli", f"must be <= 1000, got {self.used_milli}")
        if self.used_milli and self.mode != "shared":
            raise ProblemError("used_milli", "only a shared GPU can have used_milli")
        if self.mig_instances and self.mode != "mig":
            raise ProblemError("mig_instances", "only a GPU in mig mode can hold MIG instances")
        object.__setattr__(self, "mig_instances", tuple(self.mig_instances))
        if self.layout is not None:
            if self.mode != "mig":
                raise ProblemError("layout", "only a GPU in mig mode has a MIG layout")
            object.__setattr__(self, "layout", tuple(self.layout))
        if not isinstance(self.recarvable, bool):
            raise ProblemError("recarvable", f"must be true or false, got {self.recarvable!r}")


@dataclass(frozen=True, slots=True)
class Node:
    """A node: capacity left for this market and its place in the topology."""

    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: tuple[Gpu, ...] = ()
    rack: str | None = None
    zone: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _name("name", self.name)
        _int_at_least("cpu_milli", self.cpu_milli, 0)
        _int_at_least("memory_mib", self.memory_mib, 0)
        _optional_name("rack", self.rack)
        _optional_name("zone", self.zone)
        object.__setattr__(self, "gpus", tuple(self.gpus))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        seen: set[int] = set()
        for i, g in enumerate(self.gpus):
            if g.index in seen:
                raise ProblemError(f"gpus[{i}].index", f"duplicate GPU index {g.index}")
            seen.add(g.index)


@dataclass(frozen=True, slots=True)
class Wallet:
    """An agent's (or team's) budget for this round."""

    name: str
    balance: float

    def __post_init__(self) -> None:
        _name("name", self.name)
        _finite_nonneg("balance", self.balance)


@dataclass(frozen=True, slots=True)
class Unit:
    """What one replica needs: ``whole`` GPUs (``gpus`` of them), one ``mig`` instance of
    ``profile``, or a ``share`` of ``milli`` milli-GPU on one GPU."""

    kind: str
    gpus: int = 1
    profile: str | None = None
    milli: int = 0

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ProblemError("kind", f"must be one of {', '.join(UNIT_KINDS)}; got {self.kind!r}")
        if self.kind == "whole":
            _int_at_least("gpus", self.gpus, 1)
            if self.gpus > MAX_GPUS_PER_REPLICA:
                raise ProblemError(
                    "gpus",
                    f"a replica runs on one node: at most "
                    f"{MAX_GPUS_PER_REPLICA} GPUs, got {self.gpus}",
                )
            if self.profile is not None or self.milli:
                raise ProblemError("kind", "a whole-GPU unit takes neither profile nor milli")
        elif self.kind == "mig":
            _name("profile", self.profile)  # type: ignore[arg-type]
            if self.milli:
                raise ProblemError("milli", "a MIG unit takes no milli")
        else:
            _int_at_least("milli", self.milli, 1)
            if self.milli >= 1000:
                raise ProblemError("milli", f"a share is below 1000 milli-GPU, got {self.milli}")
            if self.profile is not None:
                raise ProblemError("profile", "a share takes no MIG profile")


@dataclass(frozen=True, slots=True)
class Alternative:
    """One way to satisfy a bid: ``replicas`` x ``unit``, all or nothing, worth ``value``.

    ``models`` restricts GPU models (empty: any); ``min_gpu_memory_gb`` excludes smaller GPUs.
    ``locality`` keeps all replicas inside one GPU, NVLink domain, node, rack or zone (``any``:
    no constraint). Every replica runs on one node; all GPUs of one alternative are of one model.
    """

    value: float
    unit: Unit
    replicas: int = 1
    cpu_milli: int = 0
    memory_mib: int = 0
    models: tuple[str, ...] = ()
    min_gpu_memory_gb: float = 0.0
    locality: str = "any"

    def __post_init__(self) -> None:
        _finite_nonneg("value", self.value)
        _int_at_least("replicas", self.replicas, 1)
        if self.replicas > MAX_REPLICAS:
            raise ProblemError("replicas", f"must be at most {MAX_REPLICAS}, got {self.replicas}")
        _int_at_least("cpu_milli", self.cpu_milli, 0)
        _int_at_least("memory_mib", self.memory_mib, 0)
        _finite_nonneg("min_gpu_memory_gb", self.min_gpu_memory_gb)
        object.__setattr__(self, "models", tuple(self.models))
        if self.locality not in LOCALITIES:
            raise ProblemError(
                "locality", f"must be one of {', '.join(LOCALITIES)}; got {self.locality!r}"
            )
        if (
            self.locality == "gpu"
            and self.unit.kind == "whole"
            and (self.replicas > 1 or self.unit.gpus > 1)
        ):
            raise ProblemError("locality", "more than one whole GPU cannot fit on one GPU")

    @property
    def gpus_per_replica(self) -> int:
        """Physical GPUs each replica touches (1 for MIG and shares)."""
        return self.unit.gpus if self.unit.kind == "whole" else 1


@dataclass(frozen=True, slots=True)
class Bid:
    """A bid: XOR list of alternatives, charged to ``wallet``; at most one alternative wins."""

    id: str
    bidder: str
    wallet: str
    alternatives: tuple[Alternative, ...]

    def __post_init__(self) -> None:
        _name("id", self.id)
        _name("bidder", self.bidder)
        _name("wallet", self.wallet)
        object.__setattr__(self, "alternatives", tuple(self.alternatives))
        if not self.alternatives:
            raise ProblemError("alternatives", "a bid needs at least one alternative")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one replica runs: node, GPU indices, and MIG profile/start or share milli.

    Kind: ``mig`` if ``mig_profile`` is set, ``share`` if ``milli`` > 0, otherwise ``whole``.
    """

    node: str
    gpus: tuple[int, ...]
    mig_profile: str | None = None
    mig_start: int | None = None
    milli: int = 0

    def __post_init__(self) -> None:
        _name("node", self.node)
        object.__setattr__(self, "gpus", tuple(self.gpus))
        if not self.gpus:
            raise ProblemError("gpus", "a placement names at least one GPU")
        for i, g in enumerate(self.gpus):
            _int_at_least(f"gpus[{i}]", g, 0)
        if len(set(self.gpus)) != len(self.gpus):
            raise ProblemError("gpus", f"GPU indices repeat: {list(self.gpus)}")
        _optional_name("mig_profile", self.mig_profile)
        if (self.mig_profile is None) != (self.mig_start is None):
            raise ProblemError("mig_start", "mig_profile and mig_start go together")
        if self.mig_start is not None:
            _int_at_least("mig_start", self.mig_start, 0)
        _int_at_least("milli", self.milli, 0)
        if self.milli >= 1000:
            raise ProblemError("milli", f"a share is below 1000 milli-GPU, got {self.milli}")
        if (self.mig_profile is not None or self.milli) and len(self.gpus) != 1:
            raise ProblemError("gpus", "a MIG instance or a share lives on exactly one GPU")
        if self.mig_profile is not None and self.milli:
            raise ProblemError("milli", "a placement is either MIG or a share, not both")

    @property
    def kind(self) -> str:
        """``whole``, ``mig`` or ``share``."""
        if self.mig_profile is not None:
            return "mig"
        return "share" if self.milli else "whole"


@dataclass(frozen=True, slots=True)
class Incumbent:
    """Running work: fixed placements; kept in place or evicted, never moved.

    Evicting it loses ``value`` plus ``preemption_cost`` of welfare. ``preemptible=False``
    (e.g. inside its minimum runtime) means it is always kept.
    """

    id: str
    bidder: str
    value: float
    placements: tuple[Placement, ...]
    cpu_milli: int = 0
    memory_mib: int = 0
    preemptible: bool = True
    preemption_cost: float = 0.0
    wallet: str | None = None

    def __post_init__(self) -> None:
        _name("id", self.id)
        _name("bidder", self.bidder)
        _optional_name("wallet", self.wallet)
        _finite_nonneg("value", self.value)
        _finite_nonneg("preemption_cost", self.preemption_cost)
        _int_at_least("cpu_milli", self.cpu_milli, 0)
        _int_at_least("memory_mib", self.memory_mib, 0)
        object.__setattr__(self, "placements", tuple(self.placements))
        if not self.placements:
            raise ProblemError("placements", "an incumbent holds at least one placement")
        if not isinstance(self.preemptible, bool):
            raise ProblemError("preemptible", f"must be true or false, got {self.preemptible!r}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One round: the cluster, wallets, bids, incumbents and reserve prices.

    Construct it directly or with :func:`allocator.problem_from_dict`; either way it is validated
    once here and immutable afterwards.

    ``reserve_prices`` maps a GPU model name to the least value per GPU-equivalent at which its
    capacity is sold. ``extra_models`` adds whole-GPU models the catalog does not know.

    ``reconfigure_cost`` is the welfare lost by re-carving one GPU that has a ``layout`` (it is
    unavailable while the MIG manager applies the change): a round re-carves a GPU only when the
    work it places there is worth more than that, and only if no work is kept on it.
    """

    nodes: tuple[Node, ...]
    wallets: tuple[Wallet, ...] = ()
    bids: tuple[Bid, ...] = ()
    incumbents: tuple[Incumbent, ...] = ()
    reserve_prices: Mapping[str, float] = field(default_factory=dict)
    extra_models: tuple[GpuModel, ...] = ()
    round_id: str = "round"
    reconfigure_cost: float = 0.0

    def __post_init__(self) -> None:
        for name in ("nodes", "wallets", "bids", "incumbents", "extra_models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "reserve_prices", MappingProxyType(dict(self.reserve_prices)))
        _name("round_id", self.round_id)
        _finite_nonneg("reconfigure_cost", self.reconfigure_cost)
        models = self._check_models()
        self._check_nodes(models)
        self._check_market(models)
        self._check_occupancy(models)

    # ------------------------------------------------------------------ lookups
    def model(self, name: str) -> GpuModel:
        """The catalog or extra model called ``name`` (KeyError if unknown)."""
        for m in self.extra_models:
            if name == m.name or name in m.aliases:
                return m
        return CATALOG[name]

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError if absent)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def gpu_count(self) -> int:
        """Number of physical GPUs in the cluster."""
        return sum(len(n.gpus) for n in self.nodes)

    # ------------------------------------------------------------------ validation
    def _check_models(self) -> dict[str, GpuModel]:
        models: dict[str, GpuModel] = dict(CATALOG)
        for i, m in enumerate(self.extra_models):
            if m.name in models:
                raise ProblemError(
                    f"extra_models[{i}].name", f"{m.name!r} is already a known model"
                )
            for key in (m.name, *m.aliases):
                models[key] = m
        canonical: dict[str, float] = {}
        for name, price in self.reserve_prices.items():
            if name not in models:
                raise ProblemError(f"reserve_prices.{name}", f"unknown GPU model {name!r}")
            _finite_nonneg(f"reserve_prices.{name}", price)
            if models[name].name in canonical:
                raise ProblemError(
                    f"reserve_prices.{name}", f"{models[name].name} already has a reserve price"
                )
            canonical[models[name].name] = float(price)
        # Keys are stored under canonical model names, so lookups need no alias handling.
        object.__setattr__(self, "reserve_prices", MappingProxyType(canonical))
        return models

    def _check_nodes(self, models: Mapping[str, GpuModel]) -> None:
        names: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.name in names:
                raise ProblemError(f"nodes[{i}].name", f"duplicate node name {n.name!r}")
            names.add(n.name)
            for j, g in enumerate(n.gpus):
                path = f"nodes[{i}].gpus[{j}]"
                m = models.get(g.model)
                if m is None:
                    raise ProblemError(
                        f"{path}.model",
                        f"unknown GPU model {g.model!r}; add it to extra_models with its memory",
                    )
                if g.mode == "mig" and not m.mig_capable:
                    raise ProblemError(f"{path}.mode", f"{m.name} is not MIG-capable")
                if g.layout is not None:
                    try:  # the layout itself obeys the MIG rules
                        GpuOccupancy(m, "mig", n.name, g.index).take_all(
                            (x.profile, x.start) for x in g.layout
                        )
                    except OccupancyError as e:
                        raise ProblemError(f"{path}.layout", e.message) from None
                if g.mig_instances:
                    try:
                        GpuOccupancy.of(g, m, n.name)  # takes the instances: MIG rules
                    except OccupancyError as e:
                        raise ProblemError(f"{path}.mig_instances", e.message) from None

    def _check_market(self, models: Mapping[str, GpuModel]) -> None:
        wallets: set[str] = set()
        for i, w in enumerate(self.wallets):
            if w.name in wallets:
                raise ProblemError(f"wallets[{i}].name", f"duplicate wallet {w.name!r}")
            wallets.add(w.name)
        ids = self._check_bids(models, wallets)
        for i, inc in enumerate(self.incumbents):
            path = f"incumbents[{i}]"
            if inc.id in ids:
                raise ProblemError(
                    f"{path}.id", f"id {inc.id!r} is already used by a bid or incumbent"
                )
            ids.add(inc.id)
            if inc.wallet is not None and inc.wallet not in wallets:
                raise ProblemError(f"{path}.wallet", f"no wallet called {inc.wallet!r}")

    def _check_bids(self, models: Mapping[str, GpuModel], wallets: set[str]) -> set[str]:
        """Bid ids, wallets and alternatives' references; returns the bid ids."""
        ids: set[str] = set()
        has_rack = any(n.rack is not None for n in self.nodes)
        has_zone = any(n.zone is not None for n in self.nodes)
        for i, b in enumerate(self.bids):
            path = f"bids[{i}]"
            if b.id in ids:
                raise ProblemError(f"{path}.id", f"duplicate bid id {b.id!r}")
            ids.add(b.id)
            if b.wallet not in wallets:
                raise ProblemError(f"{path}.wallet", f"no wallet called {b.wallet!r}")
            for k, a in enumerate(b.alternatives):
                _check_alternative(f"{path}.alternatives[{k}]", a, models, has_rack, has_zone)
        return ids

    def _check_occupancy(self, models: Mapping[str, GpuModel]) -> None:
        """Incumbents must sit on real GPUs of the right mode, legally, without overlapping
        (the rules of :mod:`allocator.model.occupancy`), and within their nodes' CPU and
        memory (checked once all are placed)."""
        nodes = {n.name: n for n in self.nodes}
        used: dict[str, NodeOccupancy] = {}  # nodes in order of first use
        for i, inc in enumerate(self.incumbents):
            for j, p in enumerate(inc.placements):
                path = f"incumbents[{i}].placements[{j}]"
                occ = used.get(p.node)
                if occ is None:
                    if p.node not in nodes:
                        raise ProblemError(f"{path}.node", f"no node called {p.node!r}")
                    occ = used[p.node] = NodeOccupancy(nodes[p.node], models)
                occ.take_resources(inc.cpu_milli, inc.memory_mib, strict=False)
                try:
                    occ.take(
                        p.gpus,
                        p.kind,
                        milli=p.milli,
                        profile=p.mig_profile,
                        start=p.mig_start,
                        owner=inc.id,
                    )
                except OccupancyError as e:
                    raise ProblemError(e.at(path), e.message) from None
        for occ in used.values():
            if occ.cpu_over:
                raise ProblemError(
                    "incumbents",
                    f"incumbents use {occ.used_cpu_milli} CPU milli of {occ.name!r}, "
                    f"which has {occ.cpu_milli}",
                )
        for occ in used.values():
            if occ.memory_over:
                raise ProblemError(
                    "incumbents",
                    f"incumbents use {occ.used_memory_mib} MiB of {occ.name!r}, "
                    f"which has {occ.memory_mib}",
                )


def _check_alternative(
    path: str, a: Alternative, models: Mapping[str, GpuModel], has_rack: bool, has_zone: bool
) -> None:
    """An alternative's models and MIG profile exist, and its locality has racks or zones."""
    for j, name in enumerate(a.models):
        if name not in models:
            raise ProblemError(f"{path}.models[{j}]", f"unknown GPU model {name!r}")
    if a.unit.kind == "mig":
        allowed = [models[x] for x in a.models] or list(models.values())
        if not any(m.profile(a.unit.profile or "") for m in allowed):
            raise ProblemError(
                f"{path}.unit.profile",
                f"no allowed GPU model has MIG profile {a.unit.profile!r}",
            )
    if a.locality == "rack" and not has_rack:
        raise ProblemError(f"{path}.locality", "no node has a rack")
    if a.locality == "zone" and not has_zone:
        raise ProblemError(f"{path}.locality", "no node has a zone")
