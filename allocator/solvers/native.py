"""The C++ engine (``allocator._core``) behind the ``greedy`` and ``local`` solvers.

:class:`NativeEngine` lowers a :class:`~allocator.model.Problem` once into flat numpy arrays
(names become indices: models present in the cluster, their MIG profiles, nodes, GPUs, NVLink
domains, racks, zones, wallets, bids, alternatives, incumbents) and keeps the C++ engine. An
:class:`~allocator.solvers.assemble.Allocation` crosses the boundary the same way, so payments and
loss reasons can be computed for any allocation, including one found by CP-SAT.
This module holds no allocation logic of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import allocator._core as _core
from allocator.model import LOCALITIES, GpuModel, Placement, Problem, ProblemError
from allocator.solvers.assemble import Allocation

__all__ = ["NativeEngine"]

_MODE = {"whole": 0, "shared": 1, "mig": 2}
_KIND = {"whole": 0, "mig": 1, "share": 2}
_LOCALITY = {name: i for i, name in enumerate(LOCALITIES)}


def _i64(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _f64(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


class NativeEngine:
    """One problem lowered into the C++ engine.

    Parameters
    ----------
    problem
        The validated round.
    alpha
        Exponent of size in the greedy ranking score ``value / size**alpha``.
    """

    def __init__(self, problem: Problem, *, alpha: float = 0.75) -> None:
        self.problem = problem
        self._models: list[GpuModel] = []
        self._model_index: dict[str, int] = {}
        self._node_index = {n.name: i for i, n in enumerate(problem.nodes)}
        self._gpu_index: dict[tuple[int, int], int] = {}
        self._gpu_key: list[tuple[str, int, int]] = []  # node name, device index, model index
        self._profile_indices: dict[tuple[int, str], int] = {}
        data = self._lower()
        try:
            self._engine = _core.Engine(data, alpha)
        except ValueError as e:
            raise ProblemError("problem", f"the C++ engine rejected the problem: {e}") from e

    # ------------------------------------------------------------------ lowering
    def _model_of(self, name: str) -> int:
        canonical = self.problem.model(name).name
        if canonical not in self._model_index:
            self._model_index[canonical] = len(self._models)
            self._models.append(self.problem.model(name))
        return self._model_index[canonical]

    def _lower(self) -> dict[str, np.ndarray]:
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
        data: dict[str, np.ndarray] = {
            "model_memory_gb": _f64([m.memory_gb for m in self._models]),
            "model_mig_units": _i64([m.mig_units for m in self._models]),
            "model_compute_units": _i64([m.compute_units for m in self._models]),
            "model_reserve": _f64(reserve),
            "model_whole_equivalent": _f64([m.whole_equivalent for m in self._models]),
            "profile_model": _i64(p_model),
            "profile_compute": _i64(p_comp),
            "profile_size": _i64(p_size),
            "profile_starts_mask": _i64(p_starts),
            "profile_max_count": _i64(p_max),
            "profile_media": _i64(p_media),
            "node_cpu_milli": _i64(node_cpu),
            "node_memory_mib": _i64(node_mem),
            "node_rack": _i64(node_rack),
            "node_zone": _i64(node_zone),
            "gpu_node": _i64(g_node),
            "gpu_device": _i64(g_dev),
            "gpu_model": _i64(g_model),
            "gpu_mode": _i64(g_mode),
            "gpu_nvlink": _i64(g_nv),
            "gpu_used_milli": _i64(g_used),
            "hold_gpu": _i64(h_gpu),
            "hold_profile": _i64(h_prof),
            "hold_start": _i64(h_start),
            "wallet_balance": _f64([float(w.balance) for w in pb.wallets]),
            "bid_wallet": _i64([wallet_index[b.wallet] for b in pb.bids]),
            "alt_bid": _i64(a_bid),
            "alt_value": _f64(a_val),
            "alt_kind": _i64(a_kind),
            "alt_gpus": _i64(a_gpus),
            "alt_milli": _i64(a_milli),
            "alt_replicas": _i64(a_rep),
            "alt_cpu_milli": _i64(a_cpu),
            "alt_memory_mib": _i64(a_mem),
            "alt_min_gpu_memory_gb": _f64(a_minmem),
            "alt_locality": _i64(a_loc),
            "alt_model_offsets": _i64(a_off),
            "alt_models": _i64(a_models),
            "alt_profiles": _i64(a_profs),
            "inc_value": _f64(i_val),
            "inc_preemption_cost": _f64(i_cost),
            "inc_preemptible": _i64(i_pre),
            "inc_cpu_milli": _i64(i_cpu),
            "inc_memory_mib": _i64(i_mem),
            "inc_placement_offsets": _i64(i_off),
        }
        data.update(self._placements_to_arrays("inc_pl_", placements))
        return data

    def _profile_index(self, model: int, name: str) -> int:
        """Index of profile ``name`` in model ``model``'s table, or -1 (memoised: hot path)."""
        key = (model, name)
        index = self._profile_indices.get(key)
        if index is None:
            profiles = self._models[model].profiles
            index = next((i for i, p in enumerate(profiles) if p.name == name), -1)
            self._profile_indices[key] = index
        return index

    def _placements_to_arrays(
        self, prefix: str, placements: list[Placement]
    ) -> dict[str, np.ndarray]:
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
        return {
            f"{prefix}node": _i64(node),
            f"{prefix}kind": _i64(kind),
            f"{prefix}profile": _i64(prof),
            f"{prefix}start": _i64(start),
            f"{prefix}milli": _i64(milli),
            f"{prefix}gpu_offsets": _i64(goff),
            f"{prefix}gpus": _i64(gl),
        }

    # ------------------------------------------------------------------ allocations
    def _alloc_to_arrays(self, alloc: Allocation) -> dict[str, Any]:
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
        data: dict[str, Any] = {
            "win_bid": _i64(win_bid),
            "win_alt": _i64(win_alt),
            "win_replica_offsets": _i64(roff),
            "evicted": _i64(sorted(alloc.evicted)),
        }
        data.update(self._placements_to_arrays("pl_", placements))
        return data

    def _arrays_to_alloc(self, d: Mapping[str, Any], stats: dict[str, Any]) -> Allocation:
        node_names = [n.name for n in self.problem.nodes]

        def as_list(key: str) -> list[int]:
            # Plain ints up front: indexing a NumPy array element by element is far slower.
            x = d[key]
            return x.tolist() if hasattr(x, "tolist") else list(x)

        win_bid, win_alt = as_list("win_bid"), as_list("win_alt")
        roff = as_list("win_replica_offsets")
        pl_node, pl_kind, pl_prof = as_list("pl_node"), as_list("pl_kind"), as_list("pl_profile")
        pl_start, pl_milli = as_list("pl_start"), as_list("pl_milli")
        goff, gl = as_list("pl_gpu_offsets"), as_list("pl_gpus")
        winners: dict[int, tuple[int, tuple[Placement, ...]]] = {}
        for w in range(len(win_bid)):
            reps = []
            for r in range(int(roff[w]), int(roff[w + 1])):
                gis = [int(g) for g in gl[int(goff[r]) : int(goff[r + 1])]]
                devices = tuple(sorted(self._gpu_key[g][1] for g in gis))
                kind = int(pl_kind[r])
                if kind == _KIND["mig"]:
                    model = self._models[self._gpu_key[gis[0]][2]]
                    reps.append(
                        Placement(
                            node_names[int(pl_node[r])],
                            devices,
                            mig_profile=model.profiles[int(pl_prof[r])].name,
                            mig_start=int(pl_start[r]),
                        )
                    )
                elif kind == _KIND["share"]:
                    reps.append(
                        Placement(node_names[int(pl_node[r])], devices, milli=int(pl_milli[r]))
                    )
                else:
                    reps.append(Placement(node_names[int(pl_node[r])], devices))
            winners[int(win_bid[w])] = (int(win_alt[w]), tuple(reps))
        evicted = frozenset(int(i) for i in d["evicted"])
        return Allocation(winners, evicted, stats)

    # ------------------------------------------------------------------ solvers
    def greedy(self) -> Allocation:
        """The greedy allocation (value-density order, topology/fragmentation-aware packing)."""
        d = self._engine.greedy()
        return self._arrays_to_alloc(d, {"objective": float(d["welfare"])})

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
        d = self._engine.local(
            self._alloc_to_arrays(start),
            float(time_limit),
            int(seed),
            int(max_iterations),
            int(patience),
        )
        stats = {
            "objective": float(d["welfare"]),
            "local_iterations": int(d["iterations"]),
            "local_improvements": int(d["improvements"]),
            "local_seconds": float(d["seconds"]),
        }
        return self._arrays_to_alloc(d, stats)

    def critical_payments(self, alloc: Allocation, threads: int = 1) -> dict[int, float]:
        """Bid index -> critical payment for every winner of ``alloc`` (any feasible allocation),
        the winners' replays spread over ``threads`` threads (0: one per CPU)."""
        pay = self._engine.critical_payments(self._alloc_to_arrays(alloc), threads)
        return {b: float(pay[b]) for b in alloc.winners}

    def explain(self, alloc: Allocation) -> dict[int, tuple[str, dict[str, Any]]]:
        """Losing bid index -> (reason, detail numbers) for every loser of ``alloc``."""
        out: dict[int, tuple[str, dict[str, Any]]] = {}
        for b, reason, detail, model in self._engine.explain(self._alloc_to_arrays(alloc)):
            info: dict[str, Any] = dict(detail)
            if reason == "outbid" and model >= 0:
                info["model"] = self._models[model].name
            out[int(b)] = (str(reason), info)
        return out
