"""What every solver hands back (:class:`Allocation`) and how it becomes a :class:`Result`.

One place computes welfare, revenue, utilisation and clearing prices, so that solvers differ
only in the allocation they find.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from allocator.model import Loss, Node, Placement, Problem, Result, Winner

__all__ = [
    "Allocation",
    "build_result",
    "capacity_by_model",
    "gpu_equivalent",
    "reserve_cost",
    "welfare",
]


@dataclass(frozen=True, slots=True)
class Allocation:
    """A solver's decision before payments: winning alternatives with placements, evictions.

    ``winners`` maps a bid's index in ``problem.bids`` to (alternative index, placements, one per
    replica). ``evicted`` holds indices into ``problem.incumbents``.
    """

    winners: Mapping[int, tuple[int, tuple[Placement, ...]]]
    evicted: frozenset[int] = frozenset()
    stats: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "winners", MappingProxyType(dict(self.winners)))
        object.__setattr__(self, "evicted", frozenset(self.evicted))
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))


def welfare(problem: Problem, allocation: Allocation) -> float:
    """Winners' value minus what the evictions destroy (standing value + preemption cost)."""
    won = sum(problem.bids[b].alternatives[a].value for b, (a, _) in allocation.winners.items())
    lost = sum(
        problem.incumbents[i].value + problem.incumbents[i].preemption_cost
        for i in allocation.evicted
    )
    return won - lost


def gpu_equivalent(
    problem: Problem, node: str, placement: Placement, nodes: Mapping[str, Node] | None = None
) -> float:
    """How much of a GPU a placement takes: GPUs, MIG compute share, or milli/1000.

    ``nodes`` (optional) maps node names to nodes, so that many calls need no linear lookup.
    """
    if placement.kind == "share":
        return placement.milli / 1000.0
    nd = nodes[node] if nodes is not None else problem.node(node)
    gpu = next(g for g in nd.gpus if g.index == placement.gpus[0])
    model = problem.model(gpu.model)
    if placement.kind == "whole":
        return len(placement.gpus) * model.whole_equivalent
    profile = model.profile(placement.mig_profile or "")
    assert profile is not None  # placements reaching here were produced for this problem
    return model.gpu_equivalent(profile)


def reserve_cost(problem: Problem, placements: tuple[Placement, ...]) -> float:
    """The least a winner with these placements pays: reserve price x GPU-equivalents."""
    nodes = {n.name: n for n in problem.nodes}
    total = 0.0
    for p in placements:
        price = problem.reserve_prices.get(_model_of(problem, p, nodes), 0.0)
        if price:
            total += price * gpu_equivalent(problem, p.node, p, nodes)
    return total


def _model_of(problem: Problem, placement: Placement, nodes: Mapping[str, Node]) -> str:
    gpu = next(g for g in nodes[placement.node].gpus if g.index == placement.gpus[0])
    return problem.model(gpu.model).name


def build_result(
    problem: Problem,
    allocation: Allocation,
    *,
    solver: str,
    payment_rule: str,
    payments: Mapping[int, float],
    reasons: Mapping[int, tuple[str, Mapping[str, Any]]],
    status: str,
    stats: Mapping[str, Any] | None = None,
) -> Result:
    """Assemble the :class:`Result` of ``allocation`` with the given payments and loss reasons.

    ``payments`` maps winning bid indices to what they pay; ``reasons`` maps losing bid indices
    to (reason, detail).
    """
    nodes = {n.name: n for n in problem.nodes}
    winners, used, price = _winners(problem, allocation, payments, nodes)
    _add_incumbents(problem, allocation, nodes, used)
    capacity = _capacity(problem, used)
    losers = [
        Loss(problem.bids[b].id, reasons[b][0], reasons[b][1])
        for b in range(len(problem.bids))
        if b not in allocation.winners
    ]
    merged = dict(allocation.stats)
    merged.update(stats or {})
    return Result(
        round_id=problem.round_id,
        solver=solver,
        payment_rule=payment_rule,
        status=status,
        winners=tuple(winners),
        evicted=tuple(problem.incumbents[i].id for i in sorted(allocation.evicted)),
        losers=tuple(losers),
        welfare=welfare(problem, allocation),
        revenue=float(sum(payments[b] for b in allocation.winners)),
        utilisation={m: used.get(m, 0.0) / c for m, c in sorted(capacity.items())},
        clearing_prices=dict(sorted(price.items())),
        stats=merged,
    )


def _winners(
    problem: Problem,
    allocation: Allocation,
    payments: Mapping[int, float],
    nodes: Mapping[str, Node],
) -> tuple[list[Winner], dict[str, float], dict[str, float]]:
    """The winners in bid order; GPU-equivalents they use per model; the clearing price per
    model (the lowest payment per GPU-equivalent of a winner on it)."""
    winners = []
    used: dict[str, float] = {}
    price: dict[str, float] = {}
    for b in sorted(allocation.winners):
        a, placements = allocation.winners[b]
        bid = problem.bids[b]
        pay = float(payments[b])
        winners.append(Winner(bid.id, a, bid.alternatives[a].value, pay, placements))
        eq_by_model: dict[str, float] = {}
        for p in placements:
            m = _model_of(problem, p, nodes)
            eq = gpu_equivalent(problem, p.node, p, nodes)
            used[m] = used.get(m, 0.0) + eq
            eq_by_model[m] = eq_by_model.get(m, 0.0) + eq
        total_eq = sum(eq_by_model.values())
        for m in eq_by_model:
            if total_eq > 0:
                price[m] = min(price.get(m, float("inf")), pay / total_eq)
    return winners, used, price


def _add_incumbents(
    problem: Problem, allocation: Allocation, nodes: Mapping[str, Node], used: dict[str, float]
) -> None:
    """Add the GPU-equivalents of the incumbents kept (not evicted) to ``used``."""
    for i, inc in enumerate(problem.incumbents):
        if i in allocation.evicted:
            continue
        for p in inc.placements:
            m = _model_of(problem, p, nodes)
            used[m] = used.get(m, 0.0) + gpu_equivalent(problem, p.node, p, nodes)


def capacity_by_model(problem: Problem) -> dict[str, float]:
    """GPU-equivalents per model: every GPU counts as its model's ``whole_equivalent`` (what a
    Result's ``utilisation`` divides by)."""
    capacity: dict[str, float] = {}
    for n in problem.nodes:
        for g in n.gpus:
            gm = problem.model(g.model)
            capacity[gm.name] = capacity.get(gm.name, 0.0) + gm.whole_equivalent
    return capacity


def _capacity(problem: Problem, used: dict[str, float]) -> dict[str, float]:
    """GPU-equivalents per model; adds what work outside the market holds to ``used``."""
    for n in problem.nodes:
        for g in n.gpus:
            gm = problem.model(g.model)
            outside = g.used_milli / 1000.0
            for inst in g.mig_instances:
                prof = gm.profile(inst.profile)
                assert prof is not None  # validated by Problem
                outside += gm.gpu_equivalent(prof)
            if outside:
                used[gm.name] = used.get(gm.name, 0.0) + outside
    return capacity_by_model(problem)
