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

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

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
from allocator.solvers.assemble import Allocation

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


class NativeEngine:
    """One problem lowered into the C++ engine.

    Parameters
    ----------
    problem
        The validated round.
    alpha
        Exponent of size in the greedy ranking score ``value / size**alpha``.

    ``core`` is the C++ engine itself; :meth:`to_columns` and :meth:`to_allocation` convert
    allocations for it (the solver methods below do both around each call).
    """

    def __init__(self, problem: Problem, *, alpha: float = 0.75) -> None:
        self.problem = problem
        self._models: list[GpuModel] = []
        self._model_index: dict[str, int] = {}
        self._node_index = {n.name: i for i, n in enumerate(problem.nodes)}
        self._gpu_index: dict[tuple[int, int], int] = {}
        self._gpu_key: list[tuple[str, int, int]] = []  # node name, device index, model index
        self._profile_indices: dict[tuple[int, str], int] = {}
        columns = self._lower()
        try:
            self.core = _core.Engine(columns, _core.EngineOptions(alpha=alpha))
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
        racks: dict[str, int] = {}
        zones: dict[str, int] = {}
        nvlinks: dict[tuple[int, str | None], int] = {}
        node_cpu: list[int] = []
        node_mem: list[int] = []
        node_rack: list[int] = []
        node_zone: list[int] = []
        g_node: list[int] = []
        g_dev: list[int] = []
        g_model: list[int] = []
        g_mode: list[int] = []
        g_nv: list[int] = []
        g_used: list[int] = []
        h_gpu: list[int] = []
        h_prof: list[int] = []
        h_start: list[int] = []
        for ni, n in enumerate(pb.nodes):
            node_cpu.append(n.cpu_milli)
            node_mem.append(n.memory_mib)
            node_rack.append(-1 if n.rack is None else racks.setdefault(n.rack, len(racks)))
            node_zone.append(-1 if n.zone is None else zones.setdefault(n.zone, len(zones)))
            for g in n.gpus:
                gi = len(g_node)
                m = self._model_of(g.model)
                self._gpu_index[(ni, g.index)] = gi
                self._gpu_key.append((n.name, g.index, m))
                g_node.append(ni)
                g_dev.append(g.index)
                g_model.append(m)
                g_mode.append(_MODE[g.mode])
                g_nv.append(nvlinks.setdefault((ni, g.nvlink), len(nvlinks)))
                g_used.append(g.used_milli)
                for inst in g.mig_instances:
                    h_gpu.append(gi)
                    h_prof.append(self._profile_index(m, inst.profile))
                    h_start.append(inst.start)
        reserve = [0.0] * len(self._models)
        for key, price in pb.reserve_prices.items():
            canonical = pb.model(key).name
            if canonical in self._model_index:
                i = self._model_index[canonical]
                reserve[i] = max(reserve[i], float(price))
        p_model, p_comp, p_size, p_starts, p_max, p_media = [], [], [], [], [], []
        for mi, gm in enumerate(self._models):
            for prof in gm.profiles:
                p_model.append(mi)
                p_comp.append(prof.compute)
                p_size.append(prof.size)
                p_starts.append(sum(1 << s for s in prof.starts))
                p_max.append(prof.max_count)
                p_media.append(int(prof.media))
        wallet_index = {w.name: i for i, w in enumerate(pb.wallets)}
        a_bid, a_val, a_kind, a_gpus, a_milli, a_rep, a_cpu, a_mem, a_minmem, a_loc = (
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
        )
        a_off, a_models, a_profs = [0], [], []
        all_models = list(range(len(self._models)))
        for bi, b in enumerate(pb.bids):
            for a in b.alternatives:
                a_bid.append(bi)
                a_val.append(float(a.value))
                a_kind.append(_KIND[a.unit.kind])
                a_gpus.append(a.unit.gpus if a.unit.kind == "whole" else 1)
                a_milli.append(a.unit.milli)
                a_rep.append(a.replicas)
                a_cpu.append(a.cpu_milli)
                a_mem.append(a.memory_mib)
                a_minmem.append(float(a.min_gpu_memory_gb))
                a_loc.append(_LOCALITY[a.locality])
                if a.models:
                    allowed = []
                    for name in a.models:
                        canonical = pb.model(name).name
                        known = self._model_index.get(canonical)
                        if known is not None and known not in allowed:
                            allowed.append(known)
                else:
                    allowed = all_models
                for mi in allowed:
                    a_models.append(mi)
                    a_profs.append(
                        self._profile_index(mi, a.unit.profile or "")
                        if a.unit.kind == "mig"
                        else -1
                    )
                a_off.append(len(a_models))
        i_val, i_cost, i_pre, i_cpu, i_mem, i_off = [], [], [], [], [], [0]
        placements: list[Placement] = []
        for inc in pb.incumbents:
            i_val.append(float(inc.value))
            i_cost.append(float(inc.preemption_cost))
            i_pre.append(int(inc.preemptible))
            i_cpu.append(inc.cpu_milli)
            i_mem.append(inc.memory_mib)
            placements.extend(inc.placements)
            i_off.append(len(placements))
        return _core.ProblemColumns(
            model_memory_gb=_f64([m.memory_gb for m in self._models]),
            model_mig_units=_i64([m.mig_units for m in self._models]),
            model_compute_units=_i64([m.compute_units for m in self._models]),
            model_reserve=_f64(reserve),
            model_whole_equivalent=_f64([m.whole_equivalent for m in self._models]),
            profile_model=_i64(p_model),
            profile_compute=_i64(p_comp),
            profile_size=_i64(p_size),
            profile_starts_mask=_i64(p_starts),
            profile_max_count=_i64(p_max),
            profile_media=_i64(p_media),
            node_cpu_milli=_i64(node_cpu),
            node_memory_mib=_i64(node_mem),
            node_rack=_i64(node_rack),
            node_zone=_i64(node_zone),
            gpu_node=_i64(g_node),
            gpu_device=_i64(g_dev),
            gpu_model=_i64(g_model),
            gpu_mode=_i64(g_mode),
            gpu_nvlink=_i64(g_nv),
            gpu_used_milli=_i64(g_used),
            hold_gpu=_i64(h_gpu),
            hold_profile=_i64(h_prof),
            hold_start=_i64(h_start),
            wallet_balance=_f64([float(w.balance) for w in pb.wallets]),
            bid_wallet=_i64([wallet_index[b.wallet] for b in pb.bids]),
            alt_bid=_i64(a_bid),
            alt_value=_f64(a_val),
            alt_kind=_i64(a_kind),
            alt_gpus=_i64(a_gpus),
            alt_milli=_i64(a_milli),
            alt_replicas=_i64(a_rep),
            alt_cpu_milli=_i64(a_cpu),
            alt_memory_mib=_i64(a_mem),
            alt_min_gpu_memory_gb=_f64(a_minmem),
            alt_locality=_i64(a_loc),
            alt_model_offsets=_i64(a_off),
            alt_models=_i64(a_models),
            alt_profiles=_i64(a_profs),
            inc_value=_f64(i_val),
            inc_preemption_cost=_f64(i_cost),
            inc_preemptible=_i64(i_pre),
            inc_cpu_milli=_i64(i_cpu),
            inc_memory_mib=_i64(i_mem),
            inc_placement_offsets=_i64(i_off),
            inc_placements=self._placements_to_columns(placements),
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
