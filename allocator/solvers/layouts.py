"""MIG layouts planned in the round: keep a GPU's layout or re-carve it, whichever pays.

A GPU with a ``layout`` (the MIG instances that exist on it) is offered to the engine in one of
two ways. Kept (``recarvable=False``): MIG units may only take its free instances. Re-carvable:
the engine may carve its free slices into any legal instances. After the engine has allocated,
each re-carvable GPU is read back:

* the work on it (kept incumbents and winners) fits the instances that exist, profile by
  profile: the layout stays, and the winners are moved onto those instances (the placement
  inside a GPU is the driver's choice anyway, see ``docs/kubernetes.md``);
* otherwise the GPU is **re-carved**: its new layout is the winners' instances, its free slices
  carved into the smallest profile that fits them. That costs ``Problem.reconfigure_cost`` of
  welfare and needs the GPU empty: a re-carving that keeps running work on the GPU, or whose
  winners there are worth less than the cost, is refused by pinning the GPU (kept) and solving
  again; and a plan that re-carves is compared with the one that keeps every layout, so a round
  re-carves only when that raises welfare net of the costs.

Everything here works on :class:`~allocator.model.Problem` and the solvers' :class:`Allocation`;
the engine itself only knows kept layouts (``GpuData::fixed_layout`` in the C++ core).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from allocator.model import (
    Gpu,
    GpuLayout,
    GpuModel,
    GpuOccupancy,
    MigInstance,
    Problem,
)
from allocator.solvers.assemble import Allocation, welfare

__all__ = ["LayoutPlan", "fill_layout", "has_layouts", "pin", "plan_layouts", "realisable_order"]

#: Re-solves at most this many times to drop re-carvings that do not pay.
MAX_ROUNDS = 4
#: Then tries keeping this many of the re-carvings that pay least, one re-solve each.
MAX_TRIES = 3

GpuKey = tuple[str, int]  # (node, GPU index)


def has_layouts(problem: Problem) -> bool:
    """Whether any GPU of ``problem`` has a MIG layout."""
    return any(g.layout is not None for n in problem.nodes for g in n.gpus)


@dataclass(frozen=True, slots=True)
class LayoutPlan:
    """What the planner decided: the problem the engine last solved (re-carvings it refused are
    pinned there), the allocation with winners moved onto existing instances, the GPUs
    re-carved, and the target layout of every GPU that has one."""

    problem: Problem
    allocation: Allocation
    recarved: frozenset[GpuKey]
    layouts: tuple[GpuLayout, ...]
    net_welfare: float
    solves: int
    #: Per re-carved GPU: the value placed there less the evictions there (before the cost).
    gains: Mapping[GpuKey, float] = dataclasses.field(default_factory=dict)
    #: Re-carved GPUs that keep work on them (the engine may place around kept work).
    busy: frozenset[GpuKey] = frozenset()

    def margins(self) -> list[GpuKey]:
        """The re-carved GPUs, the one whose gain least exceeds the cost first."""
        return sorted(self.recarved, key=lambda k: (self.gains.get(k, 0.0), k))

    def refused(self, cost: float) -> bool:
        """Whether some re-carving here would be refused (busy GPU, or not worth its cost)."""
        return bool(self.busy) or any(self.gains.get(k, 0.0) <= cost for k in self.recarved)


def plan_layouts(problem: Problem, allocate: Callable[[Problem], Allocation]) -> LayoutPlan:
    """Plan the round's layouts around ``allocate`` (the engine: problem -> allocation).

    First every layout is kept. The recarvable GPUs that plan leaves without work of its own
    (no winner, nothing kept but preemptible incumbents) are the candidates: offered free, with
    every other GPU kept, the engine fills them; re-carvings that keep work on a GPU or bring
    less than the cost are refused (that GPU kept) and the round solved again; then keeping the
    re-carvings that pay least is tried one by one. The plan with the most welfare net of the
    re-carving costs wins, the one that keeps every layout included.
    """
    cost = problem.reconfigure_cost
    recarvable = _recarvable_keys(problem)
    kept = pin(problem, recarvable)
    alloc = allocate(kept)
    plain = _read_back(kept, alloc).plan(kept, alloc, cost, 1)
    candidates = recarvable - _working(kept, alloc)
    if not candidates or len(alloc.winners) == len(problem.bids):
        return plain
    current = pin(problem, recarvable - candidates)
    solves = 1
    best: LayoutPlan | None = None
    for _ in range(MAX_ROUNDS):
        alloc = allocate(current)
        solves += 1
        reading = _read_back(current, alloc)
        refused = {key for key, ok in reading.pays(current, alloc, cost).items() if not ok}
        if not refused:
            best = reading.plan(current, alloc, cost, solves)
            break
        current = pin(current, refused)
    if best is None or not best.recarved:
        return dataclasses.replace(plain, solves=solves)
    for key in best.margins()[:MAX_TRIES]:
        trial = pin(best.problem, [key])
        alloc = allocate(trial)
        solves += 1
        other = _read_back(trial, alloc).plan(trial, alloc, cost, solves)
        if other.net_welfare > best.net_welfare + 1e-9 and not other.refused(cost):
            best = other
    winner = plain if plain.net_welfare >= best.net_welfare - 1e-9 else best
    return dataclasses.replace(winner, solves=solves)


def _working(problem: Problem, alloc: Allocation) -> set[GpuKey]:
    """GPUs with a winner of ``alloc``, a kept non-preemptible incumbent or outside work."""
    out = {(n.name, g.index) for n in problem.nodes for g in n.gpus if g.mig_instances}
    for _, placements in alloc.winners.values():
        out.update((pl.node, i) for pl in placements for i in pl.gpus)
    for inc in problem.incumbents:
        if not inc.preemptible:
            out.update((pl.node, i) for pl in inc.placements for i in pl.gpus)
    return out


def pin(problem: Problem, keys: Iterable[GpuKey]) -> Problem:
    """``problem`` with the GPUs ``keys`` kept as they are (not recarvable)."""
    wanted: dict[str, set[int]] = {}
    for node, index in keys:
        wanted.setdefault(node, set()).add(index)
    if not wanted:
        return problem
    nodes = []
    for n in problem.nodes:
        idx = wanted.get(n.name)
        if not idx:
            nodes.append(n)
            continue
        gpus = tuple(
            dataclasses.replace(g, recarvable=False) if g.index in idx else g for g in n.gpus
        )
        nodes.append(dataclasses.replace(n, gpus=gpus))
    return dataclasses.replace(problem, nodes=tuple(nodes))


def _recarvable_keys(problem: Problem) -> set[GpuKey]:
    return {
        (n.name, g.index)
        for n in problem.nodes
        for g in n.gpus
        if g.layout is not None and g.recarvable
    }


@dataclass
class _Reading:
    """One allocation read back GPU by GPU (only GPUs with a layout)."""

    gpus: dict[GpuKey, tuple[Gpu, GpuModel]]
    kept: dict[GpuKey, list[tuple[str, int]]]  # kept incumbents' and outside instances
    won: dict[GpuKey, list[tuple[int, int]]]  # (bid, replica) of winners' MIG replicas
    evicted_value: dict[GpuKey, float]

    def instances(self, alloc: Allocation, key: GpuKey) -> list[tuple[str, int]]:
        out = []
        for b, r in self.won.get(key, []):
            pl = alloc.winners[b][1][r]
            out.append((pl.mig_profile or "", pl.mig_start or 0))
        return out

    def needs_recarve(self, alloc: Allocation, key: GpuKey) -> bool:
        gpu, _ = self.gpus[key]
        return _match(gpu.layout or (), self.kept.get(key, []), self.instances(alloc, key)) is None

    def pays(self, problem: Problem, alloc: Allocation, cost: float) -> dict[GpuKey, bool]:
        """Per re-carvable GPU that needs re-carving: whether that is allowed and pays."""
        out: dict[GpuKey, bool] = {}
        for key, (gpu, _) in self.gpus.items():
            if gpu.layout is None or not gpu.recarvable or not self.needs_recarve(alloc, key):
                continue
            out[key] = self.empty(key) and self.gain(problem, alloc, key) > cost
        return out

    def empty(self, key: GpuKey) -> bool:
        """Nothing kept on the GPU (no outside instance, no kept incumbent)."""
        return not self.kept.get(key)

    def gain(self, problem: Problem, alloc: Allocation, key: GpuKey) -> float:
        """Value of the winners' replicas on the GPU less what the evictions there destroy."""
        value = sum(
            problem.bids[b].alternatives[alloc.winners[b][0]].value / len(alloc.winners[b][1])
            for b, _ in self.won.get(key, [])
        )
        return value - self.evicted_value.get(key, 0.0)

    def plan(self, problem: Problem, alloc: Allocation, cost: float, solves: int) -> LayoutPlan:
        """The layouts, with winners moved onto existing instances where the layout stays."""
        moves: dict[tuple[int, int], int] = {}  # (bid, replica) -> new start
        layouts: list[GpuLayout] = []
        recarved: set[GpuKey] = set()
        for key, (gpu, model) in self.gpus.items():
            layout = gpu.layout or ()
            mine = self.instances(alloc, key)
            matched = _match(layout, self.kept.get(key, []), mine)
            if matched is not None:
                for (b, r), start in zip(self.won.get(key, []), matched, strict=True):
                    moves[(b, r)] = start
                layouts.append(GpuLayout(key[0], key[1], layout, recarved=False))
                continue
            recarved.add(key)
            target = fill_layout(model, mine)
            layouts.append(GpuLayout(key[0], key[1], target, recarved=True))
        moved = _move(alloc, moves)
        net = welfare(problem, moved) - cost * len(recarved)
        gains = {k: self.gain(problem, alloc, k) for k in recarved}
        busy = frozenset(k for k in recarved if not self.empty(k))
        return LayoutPlan(
            problem, moved, frozenset(recarved), tuple(layouts), net, solves, gains, busy
        )


def _read_back(problem: Problem, alloc: Allocation) -> _Reading:
    gpus: dict[GpuKey, tuple[Gpu, GpuModel]] = {}
    kept: dict[GpuKey, list[tuple[str, int]]] = {}
    for n in problem.nodes:
        for g in n.gpus:
            if g.layout is not None:
                key = (n.name, g.index)
                gpus[key] = (g, problem.model(g.model))
                kept[key] = [(x.profile, x.start) for x in g.mig_instances]
    evicted_value: dict[GpuKey, float] = {}
    for i, inc in enumerate(problem.incumbents):
        for pl in inc.placements:
            for index in pl.gpus:
                key = (pl.node, index)
                if key not in gpus:
                    continue
                if i in alloc.evicted:
                    evicted_value[key] = (
                        evicted_value.get(key, 0.0) + inc.value + inc.preemption_cost
                    )
                elif pl.mig_profile is not None and pl.mig_start is not None:
                    kept[key].append((pl.mig_profile, pl.mig_start))
    won: dict[GpuKey, list[tuple[int, int]]] = {}
    for b, (_, placements) in sorted(alloc.winners.items()):
        for r, pl in enumerate(placements):
            key = (pl.node, pl.gpus[0])
            if key in gpus and pl.mig_profile is not None:
                won.setdefault(key, []).append((b, r))
    return _Reading(gpus, kept, won, evicted_value)


def _match(
    layout: Iterable[MigInstance],
    kept: Iterable[tuple[str, int]],
    wanted: list[tuple[str, int]],
) -> list[int] | None:
    """Starts of existing free instances for ``wanted`` (profile by profile, the same start
    first), or None if the existing layout cannot hold them."""
    taken = set(kept)
    free: dict[str, list[int]] = {}
    for x in layout:
        if (x.profile, x.start) not in taken:
            free.setdefault(x.profile, []).append(x.start)
    if Counter(p for p, _ in wanted) - Counter({p: len(s) for p, s in free.items()}):
        return None
    out: list[int | None] = [None] * len(wanted)
    for i, (p, s) in enumerate(wanted):  # same start where it is free
        if s in free[p]:
            free[p].remove(s)
            out[i] = s
    for i, (p, _) in enumerate(wanted):
        if out[i] is None:
            out[i] = free[p].pop(0)
    return [s for s in out if s is not None]


def _move(alloc: Allocation, moves: Mapping[tuple[int, int], int]) -> Allocation:
    """``alloc`` with the MIG replicas in ``moves`` put at their new start slots."""
    if all(alloc.winners[b][1][r].mig_start == s for (b, r), s in moves.items()):
        return alloc
    winners = dict(alloc.winners)
    for (b, r), start in moves.items():
        alt, placements = winners[b]
        pls = list(placements)
        pls[r] = dataclasses.replace(pls[r], mig_start=start)
        winners[b] = (alt, tuple(pls))
    return dataclasses.replace(alloc, winners=winners)


def fill_layout(model: GpuModel, instances: Iterable[tuple[str, int]]) -> tuple[MigInstance, ...]:
    """The layout of a re-carved GPU: ``instances`` plus its free slices carved into the
    smallest profiles (no ``+me``) that still fit, lowest start first, so that small work finds
    instances there without another re-carving."""
    occ = GpuOccupancy(model, "mig")
    occ.take_all(instances)
    for prof in sorted((p for p in model.profiles if not p.media), key=lambda p: (p.size, p.name)):
        for start in prof.starts:
            if occ.fits("mig", profile=prof.name, start=start):
                occ.take("mig", profile=prof.name, start=start)
    return tuple(
        MigInstance(name, start) for name, start in sorted(occ.instances, key=lambda x: x[1])
    )


def realisable_order(
    model: GpuModel, layout: Iterable[MigInstance]
) -> tuple[tuple[str, ...], tuple[MigInstance, ...]] | None:
    """An order of ``layout``'s profiles in which creating the instances one by one, each at the
    lowest legal free start, succeeds, with the instances it gives; None if no order does.

    NVIDIA's mig-parted creates a configuration's instances from profile counts only and lets
    the driver choose each placement (``CreateGpuInstance``), retrying every ordering of the
    profiles until one succeeds. The driver's choice is not documented; lowest-free-start is
    the assumption here, which the instances recorded from a real GPU agree with.
    """
    names = sorted((x.profile for x in layout), key=lambda n: (-_size(model, n), n))
    seen: set[tuple[str, ...]] = set()
    for order in _orders(names):
        if order in seen:
            continue
        seen.add(order)
        occ = GpuOccupancy(model, "mig")
        made: list[MigInstance] = []
        for name in order:
            starts = occ.free_starts(name)
            if not starts:
                break
            occ.take("mig", profile=name, start=starts[0])
            made.append(MigInstance(name, starts[0]))
        else:
            return order, tuple(made)
    return None


def _size(model: GpuModel, name: str) -> int:
    prof = model.profile(name)
    return prof.size if prof is not None else 0


def _orders(names: list[str]) -> Iterable[tuple[str, ...]]:
    """Distinct orderings of ``names`` (a multiset), largest profiles first in the first one."""
    if not names:
        yield ()
        return
    for i, name in enumerate(names):
        if name in names[:i]:
            continue
        for rest in _orders(names[:i] + names[i + 1 :]):
            yield (name, *rest)
