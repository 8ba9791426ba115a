"""The C++ engine (``allocator._core``) behind the ``greedy`` and ``local`` solvers.

:class:`NativeEngine` lowers a :class:`~allocator.model.Problem` once into named numpy columns
(:class:`allocator._core.ProblemColumns`; names become indices: models present in the cluster,
their MIG profiles, nodes, GPUs, NVLink domains, racks, zones, wallets, bids, alternatives,
incumbents) and keeps the C++ engine. An :class:`~allocator.solvers.assemble.Allocation` crosses
the boundary the same way (:class:`allocator._core.AllocationColumns`), so payments and loss
reasons can be computed for any allocation, including one found by CP-SAT. GPU modes, unit kinds,
localities and loss reasons cross as the core's bound enums, matched to the model's words by name.
This module holds no allocation logic of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

import allocator._core as _core
from allocator.model import (
    GPU_MODES,
    LOCALITIES,
    LOSS_REASONS,
    UNIT_KINDS,
    GpuModel,
    Placement,
    Problem,
    ProblemError,
)
from allocator.model.occupancy import starts_mask
from allocator.solvers.assemble import Allocation
from allocator.solvers.patterns import demand_values

__all__ = ["NativeEngine", "enum_name"]

_E = TypeVar("_E")


def enum_name(word: str) -> str:
    """The core's enum member name for a word of the model: ``does_not_fit`` -> ``DoesNotFit``."""
    return "".join(part.capitalize() for part in word.split("_"))


def _members(members: Mapping[str, _E], words: Sequence[str]) -> dict[str, _E]:
    """Word -> enum member, every word of the model's vocabulary by its member name."""
    missing = [w for w in words if enum_name(w) not in members]
    if missing:
        raise ImportError(f"allocator._core lacks enum members for {missing}")
    return {w: members[enum_name(w)] for w in words}


# Codes written into the enum columns (gpu_mode, alt_kind, alt_locality, placement kind).
_MODE = {w: e.value for w, e in _members(_core.GpuMode.__members__, GPU_MODES).items()}
_KIND = {w: e.value for w, e in _members(_core.UnitKind.__members__, UNIT_KINDS).items()}
_LOCALITY = {w: e.value for w, e in _members(_core.Locality.__members__, LOCALITIES).items()}
_REASON = {e: w for w, e in _members(_core.LossReason.__members__, LOSS_REASONS).items()}


def _i64(values: list[int]) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


def _f64(values: list[float]) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


class _Columns:
    """Lists filled row by row, turned into typed arrays by name (absent: empty)."""

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self.lists.setdefault(name, []).append(value)

    def i64(self, name: str) -> npt.NDArray[np.int64]:
        return _i64(self.lists.get(name, []))

    def f64(self, name: str) -> npt.NDArray[np.float64]:
        return _f64(self.lists.get(name, []))


I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class _Nodes(NamedTuple):
    cpu_milli: I64
    memory_mib: I64
    rack: I64
    zone: I64
    gpu_node: I64
    gpu_device: I64
    gpu_model: I64
    gpu_mode: I64
    gpu_nvlink: I64
    gpu_used_milli: I64
    hold_gpu: I64
    hold_profile: I64
    hold_start: I64
    gpu_fixed_layout: I64
    layout_gpu: I64
    layout_profile: I64
    layout_start: I64


class _Models(NamedTuple):
    memory_gb: F64
    mig_units: I64
    compute_units: I64
    reserve: F64
    whole_equivalent: F64
    profile_model: I64
    profile_compute: I64
    profile_size: I64
    profile_starts_mask: I64
    profile_max_count: I64
    profile_media: I64


class _Alternatives(NamedTuple):
    bid: I64
    value: F64
    kind: I64
    gpus: I64
    milli: I64
    replicas: I64
    cpu_milli: I64
    memory_mib: I64
    min_gpu_memory_gb: F64
    locality: I64
    models: I64
    profiles: I64
    model_offsets: I64


class _Incumbents(NamedTuple):
    value: F64
    preemption_cost: F64
    preemptible: I64
    cpu_milli: I64
    memory_mib: I64
    placement_offsets: I64
    placements: list[Placement]


def round_values(problem: Problem) -> dict[int, float]:
    """The pattern rule's values for a round without a workload forecast: the round's own GPU
    bids as the demand mix (each alternative a shape of its replicas' GPUs, a bid's
    alternatives sharing its weight), scaled to ask for the round's whole and shared GPUs (MIG
    ones left out). Empty when the round has no such GPU or bid."""
    gpus = sum(1 for n in problem.nodes for g in n.gpus if g.mode != "mig")
    milli: list[int] = []
    count: list[int] = []
    weight: list[float] = []
    for b in problem.bids:
        for a in b.alternatives:
            if a.unit.kind == "mig":
                continue
            whole = a.unit.kind == "whole"
            milli.append(1000 if whole else a.unit.milli)
            count.append(a.unit.gpus * a.replicas if whole else a.replicas)
            weight.append(1.0 / len(b.alternatives))
    if gpus == 0 or not milli:
        return {}
    return demand_values(np.array(milli), np.array(count), np.array(weight), gpus)


class NativeEngine:
    """One problem lowered into the C++ engine.

    Parameters
    ----------
    problem
        The validated round.
    alpha
        Exponent of size in the greedy ranking score ``value / size**alpha``.
    packing
        ``fgd`` (the engine's default packing) or ``pattern`` (the pattern rule, with the values
        of :func:`round_values`).

    ``core`` is the C++ engine itself; :meth:`to_columns` and :meth:`to_allocation` convert
    allocations for it (the solver methods below do both around each call).
    """

    def __init__(self, problem: Problem, *, alpha: float = 0.75, packing: str = "fgd") -> None:
        self.problem = problem
        self._models: list[GpuModel] = []
        self._model_index: dict[str, int] = {}
        self._node_index = {n.name: i for i, n in enumerate(problem.nodes)}
        self._gpu_index: dict[tuple[int, int], int] = {}
        self._gpu_key: list[tuple[str, int, int]] = []  # node name, device index, model index
        self._profile_indices: dict[tuple[int, str], int] = {}
        columns = self._lower()
        options = _core.EngineOptions(alpha=alpha)
        if packing == "pattern":
            options = _core.EngineOptions(
                alpha=alpha, packing="pattern", pattern_values=sorted(round_values(problem).items())
            )
        elif packing != "fgd":
            raise ProblemError("packing", f"must be fgd or pattern; got {packing!r}")
        try:
            self.core = _core.Engine(columns, options)
        except ValueError as e:
            raise ProblemError("problem", f"the C++ engine rejected the problem: {e}") from e

    # ------------------------------------------------------------------ lowering
    def _model_of(self, name: str) -> int:
        canonical = self.problem.model(name).name
        if canonical not in self._model_index:
            self._model_index[canonical] = len(self._models)
            self._models.append(self.problem.model(name))
        return self._model_index[canonical]

    def _lower(self) -> _core.ProblemColumns:
        pb = self.problem
        n = self._lower_nodes()  # first: it numbers the models present
        m = self._lower_models()
        a = self._lower_alternatives()
        i = self._lower_incumbents()
        wallet_index = {w.name: k for k, w in enumerate(pb.wallets)}
        bidder_index = {name: k for k, name in enumerate(dict.fromkeys(b.bidder for b in pb.bids))}
        return _core.ProblemColumns(
            model_memory_gb=m.memory_gb,
            model_mig_units=m.mig_units,
            model_compute_units=m.compute_units,
            model_reserve=m.reserve,
            model_whole_equivalent=m.whole_equivalent,
            profile_model=m.profile_model,
            profile_compute=m.profile_compute,
            profile_size=m.profile_size,
            profile_starts_mask=m.profile_starts_mask,
            profile_max_count=m.profile_max_count,
            profile_media=m.profile_media,
            node_cpu_milli=n.cpu_milli,
            node_memory_mib=n.memory_mib,
            node_rack=n.rack,
            node_zone=n.zone,
            gpu_node=n.gpu_node,
            gpu_device=n.gpu_device,
            gpu_model=n.gpu_model,
            gpu_mode=n.gpu_mode,
            gpu_nvlink=n.gpu_nvlink,
            gpu_used_milli=n.gpu_used_milli,
            hold_gpu=n.hold_gpu,
            hold_profile=n.hold_profile,
            hold_start=n.hold_start,
            gpu_fixed_layout=n.gpu_fixed_layout,
            layout_gpu=n.layout_gpu,
            layout_profile=n.layout_profile,
            layout_start=n.layout_start,
            wallet_balance=_f64([float(w.balance) for w in pb.wallets]),
            bid_wallet=_i64([wallet_index[b.wallet] for b in pb.bids]),
            bid_bidder=_i64([bidder_index[b.bidder] for b in pb.bids]),
            alt_bid=a.bid,
            alt_value=a.value,
            alt_kind=a.kind,
            alt_gpus=a.gpus,
            alt_milli=a.milli,
            alt_replicas=a.replicas,
            alt_cpu_milli=a.cpu_milli,
            alt_memory_mib=a.memory_mib,
            alt_min_gpu_memory_gb=a.min_gpu_memory_gb,
            alt_locality=a.locality,
            alt_model_offsets=a.model_offsets,
            alt_models=a.models,
            alt_profiles=a.profiles,
            inc_value=i.value,
            inc_preemption_cost=i.preemption_cost,
            inc_preemptible=i.preemptible,
            inc_cpu_milli=i.cpu_milli,
            inc_memory_mib=i.memory_mib,
            inc_placement_offsets=i.placement_offsets,
            inc_placements=self._placements_to_columns(i.placements),
        )

    def _lower_nodes(self) -> _Nodes:
        """Nodes, their GPUs (numbering the models met) and the MIG instances held outside."""
        racks: dict[str, int] = {}
        zones: dict[str, int] = {}
        nvlinks: dict[tuple[int, str | None], int] = {}
        c = _Columns()
        for ni, n in enumerate(self.problem.nodes):
            c.add("cpu_milli", n.cpu_milli)
            c.add("memory_mib", n.memory_mib)
            c.add("rack", -1 if n.rack is None else racks.setdefault(n.rack, len(racks)))
            c.add("zone", -1 if n.zone is None else zones.setdefault(n.zone, len(zones)))
            for g in n.gpus:
                gi = len(self._gpu_key)
                m = self._model_of(g.model)
                self._gpu_index[(ni, g.index)] = gi
                self._gpu_key.append((n.name, g.index, m))
                c.add("gpu_node", ni)
                c.add("gpu_device", g.index)
                c.add("gpu_model", m)
                c.add("gpu_mode", _MODE[g.mode])
                c.add("gpu_nvlink", nvlinks.setdefault((ni, g.nvlink), len(nvlinks)))
                c.add("gpu_used_milli", g.used_milli)
                for inst in g.mig_instances:
                    c.add("hold_gpu", gi)
                    c.add("hold_profile", self._profile_index(m, inst.profile))
                    c.add("hold_start", inst.start)
                # A kept layout (not recarvable) limits MIG units to its instances; a GPU the
                # round may re-carve is offered free (allocator.solvers.layouts decides).
                fixed = g.layout is not None and not g.recarvable
                c.add("gpu_fixed_layout", int(fixed))
                for inst in (g.layout or ()) if fixed else ():
                    c.add("layout_gpu", gi)
                    c.add("layout_profile", self._profile_index(m, inst.profile))
                    c.add("layout_start", inst.start)
        return _Nodes(*(c.i64(name) for name in _Nodes._fields))

    def _lower_models(self) -> _Models:
        """The models present (numbered by :meth:`_lower_nodes`), reserves and MIG profiles."""
        pb = self.problem
        reserve = [0.0] * len(self._models)
        for key, price in pb.reserve_prices.items():
            canonical = pb.model(key).name
            if canonical in self._model_index:
                i = self._model_index[canonical]
                reserve[i] = max(reserve[i], float(price))
        c = _Columns()
        for mi, gm in enumerate(self._models):
            for prof in gm.profiles:
                c.add("profile_model", mi)
                c.add("profile_compute", prof.compute)
                c.add("profile_size", prof.size)
                c.add("profile_starts_mask", starts_mask(prof))
                c.add("profile_max_count", prof.max_count)
                c.add("profile_media", int(prof.media))
        return _Models(
            _f64([m.memory_gb for m in self._models]),
            _i64([m.mig_units for m in self._models]),
            _i64([m.compute_units for m in self._models]),
            _f64(reserve),
            _f64([m.whole_equivalent for m in self._models]),
            *(c.i64(name) for name in _Models._fields[5:]),
        )

    def _lower_alternatives(self) -> _Alternatives:
        """Every alternative of every bid, with the models (and MIG profiles) it may use."""
        pb = self.problem
        c = _Columns()
        offsets = [0]
        all_models = list(range(len(self._models)))
        for bi, b in enumerate(pb.bids):
            for a in b.alternatives:
                c.add("bid", bi)
                c.add("value", float(a.value))
                c.add("kind", _KIND[a.unit.kind])
                c.add("gpus", a.unit.gpus if a.unit.kind == "whole" else 1)
                c.add("milli", a.unit.milli)
                c.add("replicas", a.replicas)
                c.add("cpu_milli", a.cpu_milli)
                c.add("memory_mib", a.memory_mib)
                c.add("min_gpu_memory_gb", float(a.min_gpu_memory_gb))
                c.add("locality", _LOCALITY[a.locality])
                for mi in self._allowed_models(a.models) if a.models else all_models:
                    c.add("models", mi)
                    mig = a.unit.kind == "mig"
                    c.add("profiles", self._profile_index(mi, a.unit.profile or "") if mig else -1)
                offsets.append(len(c.lists.get("models", ())))
        return _Alternatives(
            c.i64("bid"),
            c.f64("value"),
            c.i64("kind"),
            c.i64("gpus"),
            c.i64("milli"),
            c.i64("replicas"),
            c.i64("cpu_milli"),
            c.i64("memory_mib"),
            c.f64("min_gpu_memory_gb"),
            c.i64("locality"),
            c.i64("models"),
            c.i64("profiles"),
            _i64(offsets),
        )

    def _allowed_models(self, names: Sequence[str]) -> list[int]:
        """Indices of the models present among ``names`` (aliases resolved), each once."""
        allowed: list[int] = []
        for name in names:
            known = self._model_index.get(self.problem.model(name).name)
            if known is not None and known not in allowed:
                allowed.append(known)
        return allowed

    def _lower_incumbents(self) -> _Incumbents:
        c = _Columns()
        offsets = [0]
        placements: list[Placement] = []
        for inc in self.problem.incumbents:
            c.add("value", float(inc.value))
            c.add("preemption_cost", float(inc.preemption_cost))
            c.add("preemptible", int(inc.preemptible))
            c.add("cpu_milli", inc.cpu_milli)
            c.add("memory_mib", inc.memory_mib)
            placements.extend(inc.placements)
            offsets.append(len(placements))
        return _Incumbents(
            c.f64("value"),
            c.f64("preemption_cost"),
            c.i64("preemptible"),
            c.i64("cpu_milli"),
            c.i64("memory_mib"),
            _i64(offsets),
            placements,
        )

    def _profile_index(self, model: int, name: str) -> int:
        """Index of profile ``name`` in model ``model``'s table, or -1 (memoised: hot path)."""
        key = (model, name)
        index = self._profile_indices.get(key)
        if index is None:
            profiles = self._models[model].profiles
            index = next((i for i, p in enumerate(profiles) if p.name == name), -1)
            self._profile_indices[key] = index
        return index

    def _placements_to_columns(self, placements: list[Placement]) -> _core.PlacementColumns:
        node, kind, prof, start, milli, goff, gl = [], [], [], [], [], [0], []
        for p in placements:
            ni = self._node_index.get(p.node)
            if ni is None:
                raise ProblemError("placements.node", f"no node called {p.node!r}")
            gis = []
            for d in p.gpus:
                gi = self._gpu_index.get((ni, d))
                if gi is None:
                    raise ProblemError("placements.gpus", f"node {p.node!r} has no GPU {d}")
                gis.append(gi)
            node.append(ni)
            kind.append(_KIND[p.kind])
            prof.append(
                self._profile_index(self._gpu_key[gis[0]][2], p.mig_profile)
                if p.mig_profile is not None
                else -1
            )
            start.append(-1 if p.mig_start is None else p.mig_start)
            milli.append(p.milli)
            gl.extend(gis)
            goff.append(len(gl))
        return _core.PlacementColumns(
            node=_i64(node),
            kind=_i64(kind),
            profile=_i64(prof),
            start=_i64(start),
            milli=_i64(milli),
            gpu_offsets=_i64(goff),
            gpus=_i64(gl),
        )

    # ------------------------------------------------------------------ allocations
    def to_columns(self, alloc: Allocation) -> _core.AllocationColumns:
        """``alloc`` as the core takes it (:class:`ProblemError` on an unknown bid, incumbent,
        node or GPU; the core checks the rest when it loads it)."""
        win_bid, win_alt, roff = [], [], [0]
        placements: list[Placement] = []
        for b in sorted(alloc.winners):
            a, reps = alloc.winners[b]
            if not 0 <= b < len(self.problem.bids):
                raise ProblemError("winners", f"no bid with index {b}")
            win_bid.append(b)
            win_alt.append(a)
            placements.extend(reps)
            roff.append(len(placements))
        for i in alloc.evicted:
            if not 0 <= i < len(self.problem.incumbents):
                raise ProblemError("evicted", f"no incumbent with index {i}")
        return _core.AllocationColumns(
            win_bid=_i64(win_bid),
            win_alt=_i64(win_alt),
            win_replica_offsets=_i64(roff),
            placements=self._placements_to_columns(placements),
            evicted=_i64(sorted(alloc.evicted)),
        )

    def to_allocation(
        self, columns: _core.AllocationColumns, stats: dict[str, Any] | None = None
    ) -> Allocation:
        """An allocation the core returned, in the model's names (``stats`` attached as is)."""
        node_names = [n.name for n in self.problem.nodes]
        # Plain ints up front: indexing a NumPy array element by element is far slower.
        win_bid, win_alt = columns.win_bid.tolist(), columns.win_alt.tolist()
        roff = columns.win_replica_offsets.tolist()
        pl = columns.placements
        pl_node, pl_kind, pl_prof = pl.node.tolist(), pl.kind.tolist(), pl.profile.tolist()
        pl_start, pl_milli = pl.start.tolist(), pl.milli.tolist()
        goff, gl = pl.gpu_offsets.tolist(), pl.gpus.tolist()
        winners: dict[int, tuple[int, tuple[Placement, ...]]] = {}
        for w in range(len(win_bid)):
            reps = []
            for r in range(roff[w], roff[w + 1]):
                gis = gl[goff[r] : goff[r + 1]]
                devices = tuple(sorted(self._gpu_key[g][1] for g in gis))
                kind = pl_kind[r]
                if kind == _KIND["mig"]:
                    model = self._models[self._gpu_key[gis[0]][2]]
                    reps.append(
                        Placement(
                            node_names[pl_node[r]],
                            devices,
                            mig_profile=model.profiles[pl_prof[r]].name,
                            mig_start=pl_start[r],
                        )
                    )
                elif kind == _KIND["share"]:
                    reps.append(Placement(node_names[pl_node[r]], devices, milli=pl_milli[r]))
                else:
                    reps.append(Placement(node_names[pl_node[r]], devices))
            winners[win_bid[w]] = (win_alt[w], tuple(reps))
        evicted = frozenset(columns.evicted.tolist())
        return Allocation(winners, evicted, {} if stats is None else stats)

    # ------------------------------------------------------------------ solvers
    def greedy(self) -> Allocation:
        """The greedy allocation (value-density order, topology/fragmentation-aware packing)."""
        got = self.core.greedy()
        return self.to_allocation(got, {"objective": got.welfare})

    def local(
        self,
        start: Allocation,
        *,
        time_limit: float,
        seed: int,
        max_iterations: int = -1,
        patience: int = 0,
    ) -> Allocation:
        """Improve ``start`` by seeded ruin-and-recreate moves; welfare never decreases.

        Stops at ``time_limit`` seconds, after ``max_iterations`` moves (if >= 0), or after
        ``patience`` moves without a gain (0: a default from the instance size).
        """
        got = self.core.local(
            self.to_columns(start),
            float(time_limit),
            int(seed),
            int(max_iterations),
            int(patience),
        )
        stats: dict[str, Any] = {
            "objective": got.welfare,
            "local_iterations": got.iterations,
            "local_improvements": got.improvements,
            "local_seconds": got.seconds,
        }
        return self.to_allocation(got, stats)

    def critical_payments(self, alloc: Allocation, threads: int = 1) -> dict[int, float]:
        """Bid index -> critical payment for every winner of ``alloc`` (any feasible allocation),
        the winners' replays spread over ``threads`` threads (0: one per CPU)."""
        pay = self.core.critical_payments(self.to_columns(alloc), threads)
        return {b: float(pay[b]) for b in alloc.winners}

    def critical_payments_of(
        self, alloc: Allocation, bids: Sequence[int], time_budget: float
    ) -> dict[int, float]:
        """Bid index -> critical payment for the winners ``bids`` of ``alloc`` only, replayed in
        that order until ``time_budget`` seconds have passed (the first always is); those the
        budget left out are missing from the answer."""
        pay = self.core.critical_payments_of(self.to_columns(alloc), list(bids), time_budget)
        return {b: float(x) for b, x in zip(bids, pay, strict=True) if not math.isnan(x)}

    def los_payments(self, alloc: Allocation) -> dict[int, float]:
        """Bid index -> ``los`` payment for every winner of ``alloc``: what the first bid it
        blocked in the greedy run was worth at its size (cpp/src/los.cpp); a winner the greedy
        run did not make the same way pays its bid."""
        pay = self.core.los_payments(self.to_columns(alloc))
        return {b: float(pay[b]) for b in alloc.winners}

    def explain(self, alloc: Allocation) -> dict[int, tuple[str, dict[str, Any]]]:
        """Losing bid index -> (reason, detail numbers) for every loser of ``alloc``."""
        out: dict[int, tuple[str, dict[str, Any]]] = {}
        for b, reason, detail, model in self.core.explain(self.to_columns(alloc)):
            word = _REASON[reason]
            info: dict[str, Any] = dict(detail)
            if word == "outbid" and model >= 0:
                info["model"] = self._models[model].name
            out[b] = (word, info)
        return out
