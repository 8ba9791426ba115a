"""The exact winner-determination model, solved with OR-Tools CP-SAT.

One of the two modules that import ``ortools`` (with :mod:`.lp`). It solves the same problem as
the C++ greedy and local-search solvers (the docstrings of :mod:`allocator.model.problem` are the
specification) and proves optimality on small rounds, which gives exact answers, VCG payments and
bounds against which the heuristics' gap is measured.

Formulation
-----------
Values are scaled by :data:`SCALE` and rounded to integers; the objective is reported in
original units.

* ``x[a]`` (bool): alternative ``a`` wins. ``sum(x[a] for a in bid) <= 1`` (XOR).
  ``e[i]`` (bool): preemptible incumbent ``i`` is evicted; non-preemptible ones are constants.
* **Resources** are groups of interchangeable GPUs of one node: same model, mode, NVLink domain,
  outside occupancy (``used_milli``, outside MIG instances) and no incumbent on them. A GPU
  holding an incumbent is a group of its own.
* **Demand types**: one unit of ``z`` is a GPU (whole units), or a *bundle* of shares / MIG
  instances that must sit on one GPU: ``replicas`` of them for ``locality="gpu"`` gangs, else 1.
* ``z[a, r]`` (int): how many units of its type alternative ``a`` takes from resource ``r``.
  The alternative must go to one *cell* = (locality domain, GPU model), where the domain is the
  GPU / NVLink domain / node / rack / zone (a single-replica whole unit is node-local anyway,
  and anything on one GPU is NVLink-local):
  ``sum_{r in cell} z[a, r] = need[a] * c[a, cell]`` and ``sum_cell c[a, cell] = x[a]`` (no
  ``c`` when only one cell is possible). These equalities give gang (all or nothing), one model
  and locality. A whole unit of ``k > 1`` GPUs per replica adds an integer replica count per
  node, ``sum_{r on node} z[a, r] = k * replicas_on_node`` (any ``k`` GPUs of one node form a
  replica). CPU and memory are rows per node, charged per replica (kept incumbents per
  placement).
* **NVLink**: a node's groups that differ only in NVLink domain are also merged into one
  resource, which the alternatives that need no single NVLink domain use instead of the groups
  (their GPUs are interchangeable for them). The groups keep their patterns / layouts and the
  NVLink-local alternatives; the capacity rows below hold per group for its NVLink-local demand
  and over the merged resource for all demand (Hall's condition: the rest can go to any group).
* **Whole GPUs** (``whole`` mode): ``sum_a z[a, r] <= |r|``; ``<= e[i]`` on a GPU held by ``i``.
* **Shared GPUs** of a group are counted by *fill patterns*: ``n[r, P]`` GPUs take pattern ``P``,
  a Pareto-maximal multiset of the demanded share bundles that fits ``1000 - used_milli``, or
  the pattern "one whole unit" (empty GPUs only). Demand per type <= ``sum_P count_P * n[r, P]``.
  With more than :data:`MAX_SHARE_PATTERNS` patterns (many share sizes), and on GPUs holding
  incumbents, GPUs are modelled one by one with one row in milli-GPU,
  ``used_milli + kept incumbent milli + sum milli * shares + 1000 * whole <= 1000``.
* **MIG**: the same counting with *layouts*: the Pareto-maximal vectors of demanded bundle counts
  that fit the slices, legal starts, max counts and the one-``+me`` rule together with what is
  already on the GPU (an 8-slice GPU has a few dozen). On a GPU holding preemptible incumbents
  the layouts are enumerated for each set ``S`` of them evicted, with ``n[r, L_S] <= e[i]``
  for ``i`` in ``S``. Decoding gives each GPU a concrete layout (start slots) or fill pattern
  and hands its bundles out.
* Reserve prices, model filters and minimum memory remove (alternative, model) pairs up front.
  Wallets: ``sum value[a] * x[a] <= balance`` over the bids charged to the wallet.
  The row is left out when the wallet's bids ask for at most its balance. It cannot bind either
  when a fractional knapsack of them over all free GPU capacity stays within the balance.
  Rows are added lazily: the model is solved first without any (a relaxation); if its optimum
  keeps every budget it is optimal, else the overspent wallets get their rows and it is solved
  again (see :func:`_run`).
* Redundant rows, one per GPU model and one per (model, MIG mode) and (model, shared mode)
  (MIG and share alternatives can use those GPUs only), state the capacity in GPU fractions on
  the 0/1 choice literals, so that CP-SAT derives knapsack cuts; identical GPUs modelled one by
  one are ordered by load to break symmetry. CP-SAT runs with ``linearization_level=2`` (LP with
  cuts).
* Dominance: one-alternative bids of the same shape are ordered by value
  (``x[cheaper] <= x[dearer]``) where the dearer one's wallet cannot bind (or has no row in a
  relaxation): swapping a winning cheaper one for a losing dearer one is feasible and no worse,
  so some optimum satisfies the order. Where it could bind, ``x[cheaper] and not x[dearer]``
  only when the swap would overspend it.
* A warm start gives the choices ``x`` and ``e`` only; they are completed into a hint on every
  variable by a short solve with them fixed, so that the search starts from its welfare.
* Objective: ``max sum value[a] * x[a] - sum (value[i] + preemption_cost[i]) * e[i]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from allocator.model import (
    Alternative,
    Gpu,
    GpuModel,
    Placement,
    Problem,
    ProblemError,
)
from allocator.model.occupancy import GpuOccupancy
from allocator.solvers.arguments import check_seed, check_time_limit
from allocator.solvers.assemble import Allocation, reserve_cost, welfare

__all__ = ["SCALE", "solve_cpsat", "vcg_payments"]

#: Values are multiplied by this and rounded to integers for CP-SAT.
SCALE = 1000

_log = logging.getLogger(__name__)

#: One GPU in the units of the redundant per-model rows (divisible by 1000 and by 4, 8, 12).
_GPU_UNITS = 24000

_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.MODEL_INVALID: "MODEL_INVALID",
    cp_model.UNKNOWN: "UNKNOWN",
}


# --------------------------------------------------------------------------- MIG layouts
MigType = tuple[str, int]
"""What an alternative asks of one GPU: (what, bundle). ``what`` is a MIG profile name, a share
size such as ``"250m"``, or ``"whole"``; ``bundle`` replicas go on the same GPU (``bundle`` > 1
only for ``locality="gpu"`` gangs, which must share one GPU)."""

#: A group of identical shared GPUs is counted by fill patterns only up to this many patterns;
#: beyond it (many distinct share sizes) its GPUs are modelled one by one.
MAX_SHARE_PATTERNS = 400
Layout = tuple[tuple[int, ...], tuple[tuple[int, tuple[tuple[str, int], ...]], ...]]
"""Counts per demanded type, and one concrete realisation: (type index, instances) bundles."""


def _outside_units(gpu: Gpu, model: GpuModel) -> int:
    """Capacity units of ``gpu`` held by work outside the market (shares and MIG instances)."""
    used = gpu.used_milli * _GPU_UNITS // 1000
    for inst in gpu.mig_instances:
        prof = model.profile(inst.profile)
        used += prof.size * _GPU_UNITS // model.mig_units if prof else 0
    return used


def _profile_layouts(
    model: GpuModel,
    fixed: Iterable[tuple[str, int]],
    names: Sequence[str],
    allowed: Iterable[tuple[str, int]] | None = None,
) -> dict[tuple[int, ...], tuple[tuple[str, int], ...]]:
    """Pareto-maximal instance counts of profiles ``names`` next to ``fixed``, each realised.

    A depth-first walk over the memory slices, lowest first: at each free slot, every profile
    that may start there under the MIG rules (:mod:`allocator.model.occupancy`), or none.
    ``allowed``: the only instances that may be used (a GPU's kept layout), or None.
    """
    units = model.mig_units
    occ = GpuOccupancy(model, "mig", mig_instances=fixed, layout=allowed)
    profiles = [p for p in (model.profile(n) for n in names) if p is not None]
    best: dict[tuple[int, ...], tuple[tuple[str, int], ...]] = {}
    placed: list[tuple[str, int]] = []

    def dfs(slot: int) -> None:
        if slot >= units:
            vec = tuple(sum(1 for n, _ in placed if n == p.name) for p in profiles)
            best.setdefault(vec, tuple(placed))
            return
        if occ.slices >> slot & 1:
            dfs(slot + 1)
            return
        for p in profiles:
            if slot + p.size > units or not occ.fits("mig", profile=p.name, start=slot):
                continue
            occ.take("mig", profile=p.name, start=slot)
            placed.append((p.name, slot))
            dfs(slot + p.size)
            placed.pop()
            occ.release("mig", profile=p.name, start=slot)
        dfs(slot + 1)

    dfs(0)
    return {v: best[v] for v in _pareto(best)}


def _pareto(vectors: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The vectors no other vector dominates componentwise."""
    out: list[tuple[int, ...]] = []
    for v in sorted(set(vectors), key=lambda v: (-sum(v), v)):
        if not any(all(w[k] >= v[k] for k in range(len(v))) for w in out):
            out.append(v)
    return sorted(out)


def _bundlings(have: int, sizes: Sequence[tuple[int, int]]) -> list[dict[int, int]]:
    """Ways to cut ``have`` instances into bundles: type index -> count, for (type, size)."""
    if not sizes:
        return [{}]
    (t, b), rest = sizes[0], sizes[1:]
    return [{t: n, **tail} for n in range(have // b + 1) for tail in _bundlings(have - n * b, rest)]


def share_patterns(capacity: int, types: Sequence[MigType], limit: int) -> list[Layout] | None:
    """Pareto-maximal fills of a shared GPU with ``capacity`` free milli (``None``: > ``limit``).

    ``types`` are share types (``"<milli>m"``, bundle) and possibly ``("whole", 1)``, which
    needs the GPU empty (``capacity == 1000``) and excludes everything else.
    """
    sizes = [int(w[:-1]) * b if w != "whole" else 0 for w, b in types]
    shares = [t for t, (w, _) in enumerate(types) if w != "whole"]
    out: list[Layout] = []
    vec = [0] * len(types)

    def fill(j: int, left: int) -> bool:
        if len(out) > limit:
            return False
        if j == len(shares):
            if all(sizes[t] > left for t in shares):  # nothing more fits: maximal
                bundles = tuple((t, ()) for t in shares for _ in range(vec[t]))
                out.append((tuple(vec), bundles))
            return True
        t = shares[j]
        for n in range(left // sizes[t], -1, -1):
            vec[t] = n
            if not fill(j + 1, left - n * sizes[t]):
                return False
        vec[t] = 0
        return True

    if not fill(0, capacity):
        return None
    if capacity >= 1000 and ("whole", 1) in types:
        t = types.index(("whole", 1))
        out.append((tuple(int(k == t) for k in range(len(types))), ((t, ()),)))
    return out


def mig_layouts(
    model: GpuModel,
    fixed: Iterable[tuple[str, int]],
    types: Sequence[MigType],
    allowed: Iterable[tuple[str, int]] | None = None,
) -> list[Layout]:
    """Pareto-maximal layouts of new instances of the demanded ``types`` next to ``fixed`` ones
    (using only the ``allowed`` instances, when given: a GPU's kept layout).

    A type is (profile, bundle): ``bundle`` instances of the profile on the same GPU. Every subset
    of a legal layout is legal (disjoint slices, max counts, one ``+me``), so the maximal count
    vectors describe every choice; each comes with one concrete realisation.
    """
    names = sorted({name for name, _ in types})
    out: dict[tuple[int, ...], tuple[tuple[int, tuple[tuple[str, int], ...]], ...]] = {}
    for counts, instances in _profile_layouts(model, fixed, names, allowed).items():
        per_profile: list[list[dict[int, int]]] = []
        for name, have in zip(names, counts, strict=True):
            sizes = [(t, b) for t, (n, b) in enumerate(types) if n == name]
            per_profile.append(_bundlings(have, sizes))
        for combo in itertools.product(*per_profile):
            vec = [0] * len(types)
            for part in combo:
                for t, n in part.items():
                    vec[t] = n
            key = tuple(vec)
            if key in out:
                continue
            pools = {name: [i for i in instances if i[0] == name] for name in names}
            bundles = []
            for t, n in enumerate(key):
                name, b = types[t]
                for _ in range(n):
                    bundles.append((t, tuple(pools[name][:b])))
                    del pools[name][:b]
            out[key] = tuple(bundles)
    return [(v, out[v]) for v in _pareto(out)]


def _kept_layout(gpu: Gpu) -> tuple[tuple[str, int], ...] | None:
    """The instances a GPU whose layout is kept may use (None: any legal instance; a GPU the
    round may re-carve is offered free, allocator.solvers.layouts decides what that costs)."""
    if gpu.layout is None or gpu.recarvable:
        return None
    return tuple(sorted((x.profile, x.start) for x in gpu.layout))


# --------------------------------------------------------------------------- model building
@dataclass
class _Resource:
    """A group of interchangeable GPUs of one node (see the module docstring)."""

    kind: str  # GPU mode: whole, shared or mig
    node: int
    gpus: list[int]
    model: GpuModel
    nvlink: str | None
    symmetry_key: tuple[Any, ...] | None = None
    incumbents: list[int] = field(default_factory=list)
    demanded: list[MigType] = field(default_factory=list)  # what the MIG layouts count
    layouts: list[tuple[frozenset[int], Layout, cp_model.IntVar]] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)  # a node's merged NVLink groups (see _merge)
    merged: int | None = None  # the merged resource this NVLink group is part of


@dataclass
class _AltVars:
    bid: int
    alt: int
    x: cp_model.IntVar
    model_of: dict[str, list[cp_model.IntVar]]  # model -> the choice literals that select it
    z: dict[int, cp_model.IntVar]  # resource index -> amount
    replicas_on: dict[int, cp_model.LinearExprT] = field(default_factory=dict)  # node -> count


def _check_args(
    problem: Problem, warm_start: Allocation | None, time_limit: float, seed: int, workers: int
) -> None:
    if not isinstance(problem, Problem):
        raise ProblemError("problem", f"must be a Problem, got {type(problem).__name__}")
    check_time_limit(time_limit)
    check_seed(seed)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ProblemError("workers", f"must be an integer >= 1, got {workers!r}")
    if warm_start is not None:
        if not isinstance(warm_start, Allocation):
            raise ProblemError("warm_start", f"must be an Allocation, got {warm_start!r}")
        for b, (a, _) in warm_start.winners.items():
            if not (0 <= b < len(problem.bids)) or not (0 <= a < len(problem.bids[b].alternatives)):
                raise ProblemError("warm_start", f"no bid/alternative ({b}, {a}) in the problem")
        for i in warm_start.evicted:
            if not 0 <= i < len(problem.incumbents):
                raise ProblemError("warm_start", f"no incumbent {i} in the problem")


def _sum(terms: Iterable[cp_model.LinearExprT]) -> cp_model.LinearExpr:
    """Sum of expressions as one CP-SAT expression (also when empty or all constants)."""
    return cp_model.LinearExpr.sum(list(terms))


def _mig_type(alt: Alternative) -> MigType:
    """What one z-unit of ``alt`` is: a GPU-local share or MIG gang is one bundle of all."""
    u = alt.unit
    if u.kind == "whole":
        return ("whole", 1)
    bundle = alt.replicas if alt.locality == "gpu" else 1
    return (u.profile or "", bundle) if u.kind == "mig" else (f"{u.milli}m", bundle)


def _scaled(v: float) -> int:
    return round(v * SCALE)


def _equivalents(alt: Alternative, model: GpuModel) -> float | None:
    """GPU-equivalents of ``alt`` on ``model``, or None if its unit cannot run there."""
    u = alt.unit
    if u.kind == "whole":
        return alt.replicas * u.gpus * model.whole_equivalent
    if u.kind == "share":
        return alt.replicas * u.milli / 1000.0
    p = model.profile(u.profile or "")
    if p is None:
        return None
    return alt.replicas * model.gpu_equivalent(p)


class _Builder:
    """Builds the CP-SAT model of one problem and decodes its solutions."""

    def __init__(self, problem: Problem, relaxed: frozenset[str] = frozenset()) -> None:
        self.p = problem
        self.relaxed = relaxed  # wallets whose budget row is left out (see _run)
        self.m = cp_model.CpModel()
        self.evict: dict[int, cp_model.IntVar] = {}
        self.alts: list[_AltVars] = []
        self.resources: list[_Resource] = []
        self.shared_load: dict[int, cp_model.LinearExpr] = {}
        self.spend: dict[str, tuple[cp_model.LinearExpr, int]] = {}  # binding wallets (scaled)
        self.objective: list[cp_model.LinearExpr] = []
        self._layout_cache: dict[tuple[Any, ...], list[Layout]] = {}

    # ------------------------------------------------------------------ helpers
    def kept(self, i: int) -> cp_model.LinearExpr:
        """1 if incumbent ``i`` stays, as an expression."""
        return _sum([1, -self.evict[i]] if i in self.evict else [1])

    def reserve(self, model: GpuModel) -> float:
        prices = [v for k, v in self.p.reserve_prices.items() if self.p.model(k).name == model.name]
        return max(prices, default=0.0)

    def eligible_models(self, alt: Alternative) -> set[str]:
        allowed = {self.p.model(n).name for n in alt.models}
        out: set[str] = set()
        for n in self.p.nodes:
            for g in n.gpus:
                m = self.p.model(g.model)
                if allowed and m.name not in allowed:
                    continue
                if m.memory_gb < alt.min_gpu_memory_gb:
                    continue
                eq = _equivalents(alt, m)
                if eq is None or alt.value < self.reserve(m) * eq - 1e-9:
                    continue
                out.add(m.name)
        return out

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        p = self.p
        for i, inc in enumerate(p.incumbents):
            if inc.preemptible:
                e = self.m.new_bool_var(f"evict[{i}]")
                self.evict[i] = e
                cost = _scaled(inc.value + inc.preemption_cost)
                if cost:
                    self.objective.append(-cost * e)
        eligible = [[self.eligible_models(a) for a in b.alternatives] for b in p.bids]
        demanded: dict[str, set[MigType]] = {}
        for b, bid in enumerate(p.bids):
            for k, alt in enumerate(bid.alternatives):
                for name in eligible[b][k]:
                    demanded.setdefault(name, set()).add(_mig_type(alt))
        self._make_resources(demanded)
        for b, bid in enumerate(p.bids):
            xs = []
            for k, alt in enumerate(bid.alternatives):
                av = self._alternative(b, k, alt, eligible[b][k])
                if av is not None:
                    xs.append(av.x)
                    self.objective.append(_scaled(alt.value) * av.x)
            if len(xs) > 1:
                self.m.add_at_most_one(xs)
        self._capacity_rows()
        self._dominance(self._wallet_rows())
        self.m.maximize(_sum(self.objective))

    def _dominance(self, free: set[str]) -> None:
        """Order one-alternative bids of the same shape by value.

        Two such bids ask for exactly the same thing (unit, replicas, locality, CPU, memory,
        models). If the cheaper one wins while the dearer one loses, handing its placement to
        the dearer one is feasible unless the dearer one's wallet would run out (the dearer one
        passes every reserve the cheaper one does) and does not lower welfare. So some optimum
        has ``x[dearer] >= x[cheaper]`` when the dearer one's wallet is in ``free`` (cannot run
        out), and otherwise ``x[cheaper] and not x[dearer]`` only when that wallet has less than
        the swap adds to it left (each swap raises the sum of the winners' ranks in the
        (value, bid) order, so repeated swaps end in an optimum that satisfies every such
        condition). Without this, branch and bound explores every swap of near-equal bids
        within the gap.
        """
        p = self.p
        groups: dict[tuple[Any, ...], list[tuple[float, int, cp_model.IntVar]]] = {}
        count = [0] * len(p.bids)
        for av in self.alts:
            count[av.bid] += 1
        for av in self.alts:
            bid = p.bids[av.bid]
            if len(bid.alternatives) != 1 or count[av.bid] != 1:
                continue
            alt = bid.alternatives[0]
            shape = tuple(
                getattr(alt, f.name) for f in dataclasses.fields(alt) if f.name != "value"
            )
            groups.setdefault(shape, []).append((alt.value, -av.bid, av.x))
        for members in groups.values():
            members.sort(key=lambda t: (t[0], t[1]), reverse=True)
            for (v_dear, b_dear, dear), (v_cheap, b_cheap, cheap) in itertools.pairwise(members):
                wallet = p.bids[-b_dear].wallet
                if wallet in free:
                    self.m.add_implication(cheap, dear)
                    continue
                spend, cap = self.spend[wallet]
                added = _scaled(v_dear)
                if p.bids[-b_cheap].wallet == wallet:
                    added -= _scaled(v_cheap)
                self.m.add(spend >= cap - added + 1).only_enforce_if([cheap, ~dear])

    def _make_resources(self, demanded: dict[str, set[MigType]]) -> None:
        p = self.p
        held: dict[tuple[str, int], list[int]] = {}
        for i, inc in enumerate(p.incumbents):
            for pl in inc.placements:
                for index in pl.gpus:
                    holders = held.setdefault((pl.node, index), [])
                    if i not in holders:
                        holders.append(i)
        for ni, node in enumerate(p.nodes):
            groups: dict[tuple[Any, ...], _Resource] = {}
            for g in node.gpus:
                model = p.model(g.model)
                if g.mode == "mig" and model.name not in demanded:
                    continue
                incs = held.get((node.name, g.index), [])
                outside = tuple(sorted((x.profile, x.start) for x in g.mig_instances))
                key = (g.mode, model.name, g.nvlink, g.used_milli, outside, _kept_layout(g))
                alone = bool(incs)
                if not alone and key in groups:
                    groups[key].gpus.append(g.index)
                    continue
                r = _Resource(g.mode, ni, [g.index], model, g.nvlink, None if incs else key, incs)
                self.resources.append(r)
                if not alone:
                    groups[key] = r
        for r in list(self.resources):
            if r.kind == "mig":
                types = demanded[r.model.name]
                r.demanded = sorted(t for t in types if r.model.profile(t[0]) is not None)
                self._mig_layouts(r, r.demanded)
            elif r.kind == "shared" and not r.incumbents:
                self._share_patterns(r, demanded.get(r.model.name, set()))
        self._merge_nvlink()

    def _merge_nvlink(self) -> None:
        """Merge a node's groups that differ only in NVLink domain, for alternatives that do not
        ask for NVLink locality (their GPUs are interchangeable for them).

        The groups stay as *parts* (their layouts / fill patterns and the alternatives that ask
        for one NVLink domain); the others draw from the merged resource. Capacity is exact:
        per part, its NVLink-local demand fits it; over the merged resource, all demand fits the
        sum of the parts (Hall's condition: the free demand can go to any part).
        """
        groups: dict[tuple[Any, ...], list[int]] = {}
        for ri, r in enumerate(self.resources):
            if r.symmetry_key is None or (r.kind != "whole" and not r.layouts):
                continue  # incumbents' GPUs, and shared GPUs modelled one by one
            mode, model, _, used, outside, kept = r.symmetry_key
            groups.setdefault((r.node, mode, model, used, outside, kept), []).append(ri)
        for parts in groups.values():
            first = self.resources[parts[0]]
            if len(parts) < 2 or any(self.resources[q].demanded != first.demanded for q in parts):
                continue
            gpus = [g for q in parts for g in self.resources[q].gpus]
            merged = _Resource(first.kind, first.node, gpus, first.model, None)
            merged.demanded = list(first.demanded)
            merged.parts = parts
            for q in parts:
                self.resources[q].merged = len(self.resources)
            self.resources.append(merged)

    def _share_patterns(self, r: _Resource, demanded: set[MigType]) -> None:
        """Count a group of identical shared GPUs by fill patterns, or split it up."""
        gpu = next(g for g in self.p.nodes[r.node].gpus if g.index == r.gpus[0])
        types = sorted(
            t for t in demanded if t[0][:-1].isdigit() or (t[0] == "whole" and not gpu.used_milli)
        )
        if len(r.gpus) == 1 or not types:
            return
        patterns = share_patterns(1000 - gpu.used_milli, types, MAX_SHARE_PATTERNS)
        if patterns is None:
            rest = r.gpus[1:]
            del r.gpus[1:]
            for index in rest:
                self.resources.append(
                    _Resource(r.kind, r.node, [index], r.model, r.nvlink, r.symmetry_key)
                )
            return
        r.demanded = types
        choices: list[tuple[frozenset[int], Layout, cp_model.IntVar]] = []
        for lay in patterns:
            var = self.m.new_int_var(0, len(r.gpus), f"pattern[{len(choices)}]")
            choices.append((frozenset[int](), lay, var))
        self.m.add(_sum(v for _, _, v in choices) == len(r.gpus))
        r.layouts = choices

    def _mig_layouts(self, r: _Resource, demanded: list[MigType]) -> None:
        node = self.p.nodes[r.node]
        gpu = next(g for g in node.gpus if g.index == r.gpus[0])
        outside = [(x.profile, x.start) for x in gpu.mig_instances]
        own: dict[int, list[tuple[str, int]]] = {}
        for i in r.incumbents:
            own[i] = [
                (pl.mig_profile or "", pl.mig_start or 0)
                for pl in self.p.incumbents[i].placements
                if pl.node == node.name and pl.gpus == (gpu.index,)
            ]
        movable = [i for i in r.incumbents if i in self.evict]
        choices: list[tuple[frozenset[int], Layout, cp_model.IntVar]] = []
        for size in range(len(movable) + 1):
            for gone in itertools.combinations(movable, size):
                fixed = list(outside)
                for i in r.incumbents:
                    if i not in gone:
                        fixed += own[i]
                allowed = _kept_layout(gpu)
                key = (r.model.name, tuple(sorted(fixed)), tuple(demanded), allowed)
                if key not in self._layout_cache:
                    self._layout_cache[key] = mig_layouts(r.model, fixed, demanded, allowed)
                for lay in self._layout_cache[key]:
                    var = self.m.new_int_var(0, len(r.gpus), f"layout[{len(choices)}]")
                    for i in gone:
                        self.m.add(var <= self.evict[i])
                    choices.append((frozenset(gone), lay, var))
        self.m.add(_sum(v for _, _, v in choices) == len(r.gpus))
        r.layouts = choices

    @staticmethod
    def _nvlink_bound(alt: Alternative) -> bool:
        """Whether ``alt`` needs one NVLink domain and spans more than one GPU."""
        if alt.locality != "nvlink":
            return False
        if alt.unit.kind == "whole":
            return alt.replicas * alt.gpus_per_replica > 1
        return alt.replicas > 1

    def _domain(self, alt: Alternative, r: _Resource) -> tuple[Any, ...] | None:
        node = self.p.nodes[r.node]
        loc = alt.locality
        if loc == "nvlink" and not self._nvlink_bound(alt):
            loc = "node" if alt.unit.kind == "whole" else "any"  # on one GPU: trivially local
        if alt.unit.kind == "whole" and alt.replicas == 1 and loc in ("rack", "zone", "any"):
            loc = "node"  # its one replica is on one node anyway; a node cell is a tighter LP
        if loc == "gpu":
            if alt.replicas * alt.gpus_per_replica == 1 or alt.unit.kind != "whole":
                return None  # one GPU trivially, or a bundle of shares / MIG instances
            return ("gpu", r.node, r.gpus[0])
        if loc == "nvlink":
            return ("nvlink", r.node, r.nvlink)
        if loc == "node":
            return ("node", r.node)
        if loc == "rack":
            return ("rack", node.rack) if node.rack is not None else ("node", r.node)
        if loc == "zone":
            return ("zone", node.zone) if node.zone is not None else ("node", r.node)
        return None

    def _capacity(self, alt: Alternative, r: _Resource) -> int:
        """Most of ``r`` that ``alt`` could take (0: not usable)."""
        u = alt.unit
        need = alt.replicas * alt.gpus_per_replica
        if r.parts:
            most = sum(self._capacity(alt, self.resources[q]) for q in r.parts)
            return min(need // _mig_type(alt)[1], most)
        fixed = [i for i in r.incumbents if i not in self.evict]
        if u.kind == "whole":
            if r.kind == "mig" or fixed:
                return 0
            if r.kind == "shared":
                gpu = next(g for g in self.p.nodes[r.node].gpus if g.index == r.gpus[0])
                if gpu.used_milli:
                    return 0
            return min(len(r.gpus), need)
        mig_type = _mig_type(alt)
        if u.kind == "share":
            if r.kind != "shared":
                return 0
            if not r.layouts:
                gpu = next(g for g in self.p.nodes[r.node].gpus if g.index == r.gpus[0])
                taken = gpu.used_milli + sum(self._milli_of(i, r) for i in fixed)
                return min(need // mig_type[1], max(0, 1000 - taken) // (u.milli * mig_type[1]))
        elif r.kind != "mig" or r.model.profile(u.profile or "") is None:
            return 0
        k = r.demanded.index(mig_type)
        most = max((lay[0][k] for _, lay, _ in r.layouts), default=0)
        return min(need // mig_type[1], most * len(r.gpus))

    def _milli_of(self, i: int, r: _Resource) -> int:
        node = self.p.nodes[r.node].name
        total = 0
        for pl in self.p.incumbents[i].placements:
            if pl.node == node and r.gpus[0] in pl.gpus:
                total += pl.milli if pl.kind == "share" else 1000
        return total

    def _alternative(self, b: int, k: int, alt: Alternative, models: set[str]) -> _AltVars | None:
        kgpu = alt.gpus_per_replica
        bundle = _mig_type(alt)[1]
        need = alt.replicas * kgpu // bundle  # amount of z: GPUs, shares or MIG bundles
        if alt.unit.kind == "whole" and alt.locality == "gpu" and need > 1:
            return None
        usable: dict[int, int] = {}
        local = self._nvlink_bound(alt)
        for ri, r in enumerate(self.resources):
            if (r.parts and local) or (r.merged is not None and not local):
                continue  # NVLink-local alternatives use the parts, the others the merged one
            if r.model.name in models:
                cap = self._capacity(alt, r)
                if cap > 0:
                    usable[ri] = cap
        # where the whole alternative must go: one (locality domain, model) cell
        cells: dict[tuple[Any, ...], list[int]] = {}
        for ri in usable:
            r = self.resources[ri]
            cells.setdefault((self._domain(alt, r), r.model.name), []).append(ri)
        cells = {c: ris for c, ris in cells.items() if sum(usable[ri] for ri in ris) >= need}
        if not cells:
            return None
        x = self.m.new_bool_var(f"x[{b},{k}]")
        av = _AltVars(b, k, x, {}, {})
        for ris in cells.values():
            for ri in ris:
                av.z[ri] = self.m.new_int_var(0, usable[ri], f"z[{b},{k},{ri}]")
        if len(cells) == 1:
            self.m.add(_sum(av.z.values()) == need * x)
            av.model_of[next(iter(cells))[1]] = [x]
        else:
            picks = []
            for cell, ris in cells.items():
                pick = self.m.new_bool_var(f"c[{b},{k},{cell}]")
                picks.append(pick)
                self.m.add(_sum(av.z[ri] for ri in ris) == need * pick)
                av.model_of.setdefault(cell[1], []).append(pick)
            self.m.add(_sum(picks) == x)
        # replicas per node; k GPUs of one node per replica
        by_node: dict[int, list[int]] = {}
        for ri in av.z:
            by_node.setdefault(self.resources[ri].node, []).append(ri)
        for n, ris in by_node.items():
            on_node = _sum(av.z[ri] for ri in ris)
            if kgpu > 1:
                most = sum(usable[ri] for ri in ris) // kgpu
                reps = self.m.new_int_var(0, most, f"reps[{b},{k},{n}]")
                self.m.add(on_node == kgpu * reps)
                av.replicas_on[n] = reps
            else:
                av.replicas_on[n] = on_node * bundle if bundle > 1 else on_node
        self.alts.append(av)
        return av

    def _capacity_rows(self) -> None:
        p = self.p
        cpu: dict[int, list[cp_model.LinearExprT]] = {}
        mem: dict[int, list[cp_model.LinearExprT]] = {}
        use: dict[int, list[tuple[_AltVars, cp_model.IntVar]]] = {}
        for av in self.alts:
            alt = p.bids[av.bid].alternatives[av.alt]
            for ri, z in av.z.items():
                use.setdefault(ri, []).append((av, z))
            for n, reps in av.replicas_on.items():
                if alt.cpu_milli:
                    cpu.setdefault(n, []).append(alt.cpu_milli * reps)
                if alt.memory_mib:
                    mem.setdefault(n, []).append(alt.memory_mib * reps)
        self._node_rows(cpu, mem)
        for ri, r in enumerate(self.resources):
            items = use.get(ri, [])
            if r.parts:
                if items:  # everything on the parts fits their sum
                    items = items + [it for q in r.parts for it in use.get(q, [])]
                    supplies = [lay for q in r.parts for lay in self.resources[q].layouts]
                    self._demand_rows(r, items, supplies)
                continue
            if r.kind == "whole":
                if not items:
                    continue
                total = _sum(z for _, z in items)
                for i in r.incumbents:
                    self.m.add(total <= self.evict[i])  # fixed ones left capacity 0 already
                self.m.add(total <= len(r.gpus))
            elif r.kind == "shared" and not r.layouts:
                gpu = next(g for g in p.nodes[r.node].gpus if g.index == r.gpus[0])
                load: list[cp_model.LinearExprT] = []
                for av, z in items:
                    alt = p.bids[av.bid].alternatives[av.alt]
                    size = alt.unit.milli * _mig_type(alt)[1] if alt.unit.kind == "share" else 1000
                    load.append(size * z)
                expr = _sum(load)
                self.shared_load[ri] = expr
                incs = _sum(self._milli_of(i, r) * self.kept(i) for i in r.incumbents)
                if items:
                    self.m.add(expr + incs + gpu.used_milli <= 1000)
            else:
                self._demand_rows(r, items, r.layouts)
        self._model_rows()
        self._symmetry()

    def _demand_rows(
        self,
        r: _Resource,
        items: list[tuple[_AltVars, cp_model.IntVar]],
        supplies: list[tuple[frozenset[int], Layout, cp_model.IntVar]],
    ) -> None:
        """Demand of ``items`` on ``r`` within supply: whole GPUs, or per counted type."""
        if r.kind == "whole":
            self.m.add(_sum(z for _, z in items) <= len(r.gpus))
            return
        p = self.p
        for k, mig_type in enumerate(r.demanded):
            demand = [
                z for av, z in items if _mig_type(p.bids[av.bid].alternatives[av.alt]) == mig_type
            ]
            if demand:
                self.m.add(_sum(demand) <= _sum(lay[0][k] * v for _, lay, v in supplies))

    def _model_rows(self) -> None:
        """Redundant knapsack rows per GPU model over the choice literals (for cuts).

        Each GPU is worth :data:`_GPU_UNITS`; a whole GPU takes all of it, a share ``milli`` /
        1000 of it, a MIG instance its memory slices' part. One row per model, and tighter ones
        per model and mode: MIG alternatives on the model's MIG-mode GPUs only, shares on its
        shared-mode GPUs only. Implied by the exact rows, but stated on 0/1 literals they let
        CP-SAT derive knapsack cover cuts.
        """
        p = self.p
        only = {"mig": "mig", "share": "shared"}  # unit kind -> the one GPU mode it can use
        room: dict[tuple[str, str | None], int] = {}
        for n in p.nodes:
            for g in n.gpus:
                m = p.model(g.model)
                used = _outside_units(g, m)
                for cls in (None, g.mode):
                    room[m.name, cls] = room.get((m.name, cls), 0) + _GPU_UNITS - used
        kept: dict[tuple[str, str | None], list[cp_model.LinearExprT]] = {}
        for i, inc in enumerate(p.incumbents):
            for pl in inc.placements:
                gpu = next(g for g in p.node(pl.node).gpus if g.index == pl.gpus[0])
                m = p.model(gpu.model)
                units = self._units(pl.kind, len(pl.gpus), pl.milli, pl.mig_profile, m)
                for cls in (None, gpu.mode):
                    kept.setdefault((m.name, cls), []).append(units * self.kept(i))
        terms: dict[tuple[str, str | None], list[cp_model.LinearExprT]] = {}
        for av in self.alts:
            alt = p.bids[av.bid].alternatives[av.alt]
            u = alt.unit
            for name, lits in av.model_of.items():
                m = p.model(name)
                each = self._units(u.kind, u.gpus, u.milli, u.profile, m)
                keys: list[tuple[str, str | None]] = [(name, None)]
                if u.kind in only:
                    keys.append((name, only[u.kind]))
                for key in keys:
                    terms.setdefault(key, []).extend(each * alt.replicas * lit for lit in lits)
        for key, row in terms.items():
            self.m.add(_sum(row + kept.get(key, [])) <= room[key])

    @staticmethod
    def _units(kind: str, gpus: int, milli: int, profile: str | None, m: GpuModel) -> int:
        if kind == "whole":
            return gpus * _GPU_UNITS
        if kind == "share":
            return milli * _GPU_UNITS // 1000
        prof = m.profile(profile or "")
        return prof.size * _GPU_UNITS // m.mig_units if prof else 0

    def _node_rows(
        self,
        cpu: dict[int, list[cp_model.LinearExprT]],
        mem: dict[int, list[cp_model.LinearExprT]],
    ) -> None:
        p = self.p
        for n, node in enumerate(p.nodes):
            for rows, attr, cap in (
                (cpu, "cpu_milli", node.cpu_milli),
                (mem, "memory_mib", node.memory_mib),
            ):
                if n not in rows:
                    continue
                inc_terms: list[cp_model.LinearExprT] = []
                for i, inc in enumerate(p.incumbents):
                    per = getattr(inc, attr)
                    count = sum(1 for pl in inc.placements if pl.node == node.name)
                    if per and count:
                        inc_terms.append(per * count * self.kept(i))
                self.m.add(_sum(rows[n] + inc_terms) <= cap)

    def _symmetry(self) -> None:
        """Order identical GPUs that are modelled one by one."""
        seen: dict[tuple[Any, ...], int] = {}
        for ri, r in enumerate(self.resources):
            if r.symmetry_key is None or len(r.gpus) != 1:
                continue
            key = (r.node, *r.symmetry_key)
            prev = seen.get(key)
            seen[key] = ri
            if prev is None:
                continue
            if r.kind == "shared" and prev in self.shared_load and ri in self.shared_load:
                self.m.add(self.shared_load[prev] >= self.shared_load[ri])
            elif r.kind == "mig":
                q = self.resources[prev]
                if len(q.layouts) == len(r.layouts):
                    self.m.add(
                        _sum(j * v for j, (_, _, v) in enumerate(q.layouts))
                        <= _sum(j * v for j, (_, _, v) in enumerate(r.layouts))
                    )

    def _wallet_rows(self) -> set[str]:
        """Budget rows; returns the wallets whose budget cannot bind (for :meth:`_dominance`)."""
        p = self.p
        free: set[str] = set()
        by_wallet: dict[str, list[tuple[int, cp_model.IntVar]]] = {}
        for av in self.alts:
            bid = p.bids[av.bid]
            by_wallet.setdefault(bid.wallet, []).append(
                (_scaled(bid.alternatives[av.alt].value), av.x)
            )
        for w in p.wallets:
            if w.name in self.relaxed:
                free.add(w.name)  # no row: nothing to run out of in this relaxation
                continue
            terms = by_wallet.get(w.name, [])
            cap = math.floor(w.balance * SCALE + 1e-6)
            best_per_bid: dict[int, int] = {}
            for av in self.alts:
                if p.bids[av.bid].wallet == w.name:
                    v = _scaled(p.bids[av.bid].alternatives[av.alt].value)
                    best_per_bid[av.bid] = max(best_per_bid.get(av.bid, 0), v)
            binding = bool(terms) and sum(best_per_bid.values()) > cap
            if binding:
                spend = _sum(v * x for v, x in terms)
                self.m.add(spend <= cap)
                self.spend[w.name] = (spend, cap)
            if not binding or self._most_spent(w.name) <= cap:
                free.add(w.name)  # (a row that cannot bind is kept: leaving it out hurt search)
        return free

    def _most_spent(self, wallet: str) -> float:
        """An upper bound (scaled) on what ``wallet``'s bids can win with the GPUs there are.

        Fractional knapsack of its alternatives (XOR relaxed) over all free GPU capacity, each
        alternative weighing its GPU fractions (as in :meth:`_model_rows`) on its lightest
        model. When it is within the balance, the wallet's row cannot bind.
        """
        p = self.p
        room = 0
        for n in p.nodes:
            for g in n.gpus:
                m = p.model(g.model)
                used = _outside_units(g, m)
                room += _GPU_UNITS - used
        items: list[tuple[float, int, int]] = []
        for av in self.alts:
            bid = p.bids[av.bid]
            if bid.wallet != wallet:
                continue
            alt = bid.alternatives[av.alt]
            u = alt.unit
            weight = alt.replicas * min(
                self._units(u.kind, u.gpus, u.milli, u.profile, p.model(name))
                for name in av.model_of
            )
            value = _scaled(alt.value)
            if weight <= 0:
                return math.inf
            items.append((value / weight, value, weight))
        items.sort(reverse=True)
        total = 0.0
        for density, value, weight in items:
            if weight > room:
                return total + density * room
            total += value
            room -= weight
        return total

    # ------------------------------------------------------------------ hints and decoding
    def hint(self, warm: Allocation) -> None:
        for av in self.alts:
            won = warm.winners.get(av.bid)
            self.m.add_hint(av.x, won is not None and won[0] == av.alt)
        for i, e in self.evict.items():
            self.m.add_hint(e, i in warm.evicted)

    def complete_hint(self, time_limit: float, work_limit: float | None = None) -> None:
        """Extend the hint on ``x`` / ``e`` to every variable (placements, layouts, counts).

        CP-SAT repairs a partial hint with a few conflicts only and often loses it on large
        rounds; solving the model with the hinted choices fixed (a feasibility problem) gives a
        complete hint, so the search starts from the warm start's welfare. Best effort: the hint
        stays partial if no completion is found within ``time_limit``.
        """
        hint = self.m.proto.solution_hint
        fixed = self.m.clone()
        fixed.proto.clear_solution_hint()
        for index, value in zip(hint.vars, hint.values, strict=True):
            fixed.add(fixed.get_int_var_from_proto_index(index) == value)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = time_limit
        if work_limit is not None:
            solver.parameters.max_deterministic_time = work_limit
        solver.parameters.num_workers = 1
        solver.parameters.stop_after_first_solution = True
        if solver.solve(fixed) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return
        values = [
            solver.value(fixed.get_int_var_from_proto_index(i))
            for i in range(len(self.m.proto.variables))
        ]
        self.m.proto.clear_solution_hint()
        for i, value in enumerate(values):
            self.m.add_hint(self.m.get_int_var_from_proto_index(i), value)

    def decode(self, s: cp_model.CpSolver) -> Allocation:
        p = self.p
        evicted = frozenset(i for i, e in self.evict.items() if s.boolean_value(e))
        free: dict[int, list[int]] = {ri: list(r.gpus) for ri, r in enumerate(self.resources)}
        # counted resources: give each GPU its layout / fill pattern, then hand out its bundles
        pools: dict[int, list[tuple[int, MigType, tuple[tuple[str, int], ...]]]] = {}
        for ri, r in enumerate(self.resources):
            if not r.layouts:
                continue
            gpus = list(r.gpus)
            pool: list[tuple[int, MigType, tuple[tuple[str, int], ...]]] = []
            for _, lay, v in r.layouts:
                for _ in range(s.value(v)):
                    g = gpus.pop(0)
                    pool += [(g, r.demanded[t], insts) for t, insts in lay[1]]
            pools[ri] = pool

        def take(ri: int, want: MigType) -> tuple[int, tuple[tuple[str, int], ...]]:
            for q in self.resources[ri].parts or [ri]:
                pool = pools[q]
                j = next((j for j, it in enumerate(pool) if it[1] == want), None)
                if j is not None:
                    g, _, insts = pool.pop(j)
                    return g, insts
            raise AssertionError(f"no {want} left on resource {ri}")

        def whole_gpu(ri: int) -> int:
            return next(free[q] for q in self.resources[ri].parts or [ri] if free[q]).pop(0)

        def counted(ri: int) -> bool:
            return ri in pools or any(q in pools for q in self.resources[ri].parts)

        winners: dict[int, tuple[int, tuple[Placement, ...]]] = {}
        # NVLink-local alternatives first: the others can take what is left anywhere on a node
        for av in sorted(self.alts, key=lambda av: any(self.resources[ri].parts for ri in av.z)):
            if not s.boolean_value(av.x):
                continue
            alt = p.bids[av.bid].alternatives[av.alt]
            u = alt.unit
            want = _mig_type(alt)
            placements: list[Placement] = []
            if u.kind == "whole":
                per_node: dict[int, list[int]] = {}
                for ri, z in av.z.items():
                    for _ in range(s.value(z)):
                        g = take(ri, want)[0] if counted(ri) else whole_gpu(ri)
                        per_node.setdefault(self.resources[ri].node, []).append(g)
                for n, gl in per_node.items():
                    name = p.nodes[n].name
                    for j in range(0, len(gl), u.gpus):
                        placements.append(Placement(name, tuple(gl[j : j + u.gpus])))
            else:
                for ri, z in av.z.items():
                    name = p.nodes[self.resources[ri].node].name
                    for _ in range(s.value(z)):
                        if u.kind == "mig":
                            g, insts = take(ri, want)
                            placements += [Placement(name, (g,), q, at) for q, at in insts]
                            continue
                        g = take(ri, want)[0] if counted(ri) else self.resources[ri].gpus[0]
                        placements += [Placement(name, (g,), milli=u.milli)] * want[1]
            winners[av.bid] = (av.alt, tuple(placements))
        return Allocation(winners, evicted)


@dataclass
class _Phase:
    """One CP-SAT solve of the model, possibly with some budget rows left out."""

    code: cp_model.CpSolverStatus
    alloc: Allocation | None  # the solution found (None: none)
    objective: int  # scaled, of ``alloc``
    bound: float  # scaled upper bound (inf: none)
    overspent: frozenset[str]  # wallets ``alloc`` overspends (only where rows were left out)
    stats: dict[str, Any]


def _solve_phase(
    problem: Problem,
    relaxed: frozenset[str],
    hint: Allocation | None,
    limit: _Limit,
    seed: int,
    workers: int,
) -> _Phase:
    t0 = time.perf_counter()
    builder = _Builder(problem, relaxed)
    builder.build()
    if hint is not None:
        builder.hint(hint)
        if limit.work is None:
            builder.complete_hint(min(2.0, limit.seconds / 10))
        else:  # deterministic: the work limit binds, the wall limit is only a safety cap
            builder.complete_hint(limit.seconds, min(2.0, limit.work / 10))
    proto = builder.m.proto
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(1e-3, limit.seconds - (time.perf_counter() - t0))
    if limit.work is not None:
        solver.parameters.max_deterministic_time = max(1e-3, limit.work)
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = workers
    # the LP with cuts closes the knapsack-like gaps of gang bids; it pays off even single-threaded
    solver.parameters.linearization_level = 2
    code = solver.solve(builder.m)
    stats: dict[str, Any] = {
        "variables": len(proto.variables),
        "constraints": len(proto.constraints),
        "resources": len(builder.resources),
        "alternatives_modelled": len(builder.alts),
        "work": solver.deterministic_time,
    }
    bound = solver.best_objective_bound if code != cp_model.INFEASIBLE else math.inf
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return _Phase(code, None, 0, bound, frozenset(), stats)
    alloc = builder.decode(solver)
    spent: dict[str, int] = {}
    for b, (a, _) in alloc.winners.items():
        bid = problem.bids[b]
        spent[bid.wallet] = spent.get(bid.wallet, 0) + _scaled(bid.alternatives[a].value)
    over = frozenset(
        w.name
        for w in problem.wallets
        if w.name in relaxed and spent.get(w.name, 0) > math.floor(w.balance * SCALE + 1e-6)
    )
    return _Phase(code, alloc, round(solver.objective_value), bound, over, stats)


#: Share of the time left that a relaxation (budget rows left out) may use.
_RELAXED_SHARE = 0.5


@dataclass(frozen=True)
class _Limit:
    """What a phase may spend: wall seconds, and CP-SAT's deterministic time (None: unlimited)."""

    seconds: float
    work: float | None = None

    def share(self, fraction: float) -> _Limit:
        work = None if self.work is None else self.work * fraction
        return _Limit(self.seconds * fraction, work)


def _run(
    problem: Problem,
    warm_start: Allocation | None,
    time_limit: float,
    seed: int,
    workers: int,
    work_limit: float | None = None,
) -> Allocation:
    """Solve with budget rows added lazily.

    A budget row rules out the dominance order of :meth:`_Builder._dominance` on its wallet's
    bids, and branch and bound then explores the swaps of near-equal bids. So the model is
    first solved without the rows of the wallets that could run out (a relaxation, ordered on
    every wallet): if its optimum keeps every budget, it is optimal for the round. Otherwise
    the overspent wallets get their rows and it is solved again; a relaxation that is not
    proven within its share of the time hands over to the full model. Every phase's bound is
    an upper bound on the round's optimum. With ``work_limit`` the shares are of CP-SAT's
    deterministic time (what is left of it after each phase), so the answer does not depend on
    the machine's load; ``time_limit`` stays a wall-clock cap.
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    work_left = work_limit
    relaxed = frozenset(w.name for w in problem.wallets)
    best = warm_start  # the best allocation known to keep every budget
    best_objective = -math.inf
    bound = math.inf
    proven = False
    phases = 0
    work_total = 0.0  # deterministic time of every phase (``work`` is the last phase's)
    stats: dict[str, Any] = {}
    while True:
        left = _Limit(max(1e-3, deadline - time.perf_counter()), work_left)
        phase = _solve_phase(
            problem, relaxed, best, left.share(_RELAXED_SHARE) if relaxed else left, seed, workers
        )
        phases += 1
        work_total += float(phase.stats["work"])
        if work_left is not None:
            work_left = max(0.0, work_left - float(phase.stats["work"]))
        stats = phase.stats
        bound = min(bound, phase.bound)
        if phase.alloc is not None and not phase.overspent:
            if phase.objective > best_objective:
                best, best_objective = phase.alloc, phase.objective
            if phase.code == cp_model.OPTIMAL:
                proven = True
                break
        if phase.code == cp_model.INFEASIBLE:  # a relaxation is infeasible only if the round is
            stats["status"] = "INFEASIBLE"
            break
        if not relaxed or time.perf_counter() >= deadline or work_left == 0.0:
            break
        # proven but overspent: add those rows; not proven in time: hand over to the full model
        relaxed = relaxed - phase.overspent if phase.code == cp_model.OPTIMAL else frozenset()
    alloc = best if best is not None else Allocation({})
    objective = welfare(problem, alloc)
    if proven or (math.isfinite(best_objective) and best_objective >= bound):
        stats["status"] = "OPTIMAL"
        bound = objective  # proven: the decoded welfare, free of scaling round-off
    else:
        stats.setdefault("status", "FEASIBLE" if math.isfinite(best_objective) else "UNKNOWN")
        # without any solution in time: the hint (or nothing); every phase's bound still holds
        bound = max(objective, bound / SCALE) if math.isfinite(bound) else objective
    stats["phases"] = phases
    stats["work_total"] = work_total
    stats["objective"] = float(objective)
    stats["bound"] = bound
    stats["gap"] = (bound - objective) / max(1.0, abs(bound))
    stats["time_ms"] = (time.perf_counter() - t0) * 1000.0
    return Allocation(alloc.winners, alloc.evicted, stats)


def solve_cpsat(
    problem: Problem,
    *,
    warm_start: Allocation | None,
    time_limit: float,
    seed: int,
    workers: int = 1,
    work_limit: float | None = None,
) -> Allocation:
    """Solve ``problem`` exactly with CP-SAT (see the module docstring for the model).

    Parameters
    ----------
    problem
        The validated round.
    warm_start
        A feasible allocation (e.g. from local search) given to CP-SAT as a solution hint.
    time_limit
        Seconds CP-SAT may search.
    seed
        CP-SAT's random seed.
    workers
        CP-SAT search workers (1: deterministic for a given seed and work limit).
    work_limit
        CP-SAT's deterministic time for the whole solve (None: only ``time_limit`` bounds it);
        with it and one worker the answer does not depend on the machine's load.

    Returns
    -------
    Allocation
        The best allocation found; ``stats`` holds ``status`` (``OPTIMAL``, ``FEASIBLE``,
        ``INFEASIBLE`` or ``UNKNOWN``), ``objective`` and ``bound`` (original units), ``gap``
        (``(bound - objective) / max(1, |bound|)``), ``time_ms`` and the model size
        (``variables``, ``constraints``). Without any solution in time it returns the warm start
        (or nothing won) with status ``UNKNOWN``.

    Raises
    ------
    ProblemError
        If an argument is invalid (the message names it).
    """
    _check_args(problem, warm_start, time_limit, seed, workers)
    _check_work_limit(work_limit)
    return _run(problem, warm_start, time_limit, seed, workers, work_limit)


def _check_work_limit(work_limit: float | None) -> None:
    if work_limit is None:
        return
    if isinstance(work_limit, bool) or not isinstance(work_limit, (int, float)):
        raise ProblemError("work_limit", f"must be a number, got {work_limit!r}")
    if not math.isfinite(work_limit) or work_limit <= 0:
        raise ProblemError("work_limit", f"must be a positive number, got {work_limit!r}")


def vcg_payments(
    problem: Problem,
    alloc: Allocation,
    *,
    time_limit: float,
    seed: int,
    work_limit: float | None = None,
) -> dict[int, float]:
    """VCG (Clarke pivot) payments of the winners of ``alloc``.

    A winning bidder ``B`` pays ``OPT(problem without B's bids) - (welfare(alloc) - V_B)``,
    where ``V_B`` is the value of ``B``'s winning bids; the amount is split over ``B``'s winning
    bids in proportion to their values and each share is clamped to ``[reserve cost, value]``
    (a winner never pays less than the reserve price of what it got). One CP-SAT
    solve per winning bidder, each warm-started from ``alloc`` without ``B``'s bids.

    The payments are exact only when ``alloc`` is optimal and every sub-solve is proven
    optimal. When a sub-solve is not, its objective (a lower bound of ``OPT``) is used, so the
    payment may be too low; this is logged and raised as a :class:`RuntimeWarning`, and
    ``alloc.stats['status']`` not being ``OPTIMAL`` is reported the same way.

    Returns
    -------
    dict[int, float]
        Payment per winning bid index.

    Raises
    ------
    ProblemError
        If an argument is invalid (the message names it).
    """
    _check_args(problem, alloc, time_limit, seed, 1)
    _check_work_limit(work_limit)
    if "status" in alloc.stats and alloc.stats["status"] != "OPTIMAL":
        _warn(f"VCG payments on an allocation that is {alloc.stats['status']}, not proven optimal")
    total = welfare(problem, alloc)
    by_bidder: dict[str, list[int]] = {}
    for b in sorted(alloc.winners):
        by_bidder.setdefault(problem.bids[b].bidder, []).append(b)
    out: dict[int, float] = {}
    for bidder, won in by_bidder.items():
        keep = [i for i, bid in enumerate(problem.bids) if bid.bidder != bidder]
        sub = Problem(
            nodes=problem.nodes,
            wallets=problem.wallets,
            bids=tuple(problem.bids[i] for i in keep),
            incumbents=problem.incumbents,
            reserve_prices=problem.reserve_prices,
            extra_models=problem.extra_models,
            round_id=problem.round_id,
        )
        index = {old: new for new, old in enumerate(keep)}
        hint = Allocation(
            {index[b]: w for b, w in alloc.winners.items() if b in index}, alloc.evicted
        )
        res = _run(sub, hint, time_limit, seed, 1, work_limit)
        if res.stats["status"] != "OPTIMAL":
            _warn(
                f"VCG sub-solve without bidder {bidder!r} is {res.stats['status']} "
                f"(gap {res.stats['gap']:.3g}); its payment may be too low"
            )
        opt_without = max(float(res.stats["objective"]), welfare(sub, hint))
        values = {b: problem.bids[b].alternatives[alloc.winners[b][0]].value for b in won}
        v_b = sum(values.values())
        pay = opt_without - (total - v_b)
        for b in won:
            share = pay * values[b] / v_b if v_b > 0 else 0.0
            floor = reserve_cost(problem, alloc.winners[b][1])
            out[b] = min(max(share, floor, 0.0), values[b])
    return out


def _warn(message: str) -> None:
    _log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
