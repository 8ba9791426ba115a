"""The outcome of one round: winners with placements, evictions, typed loss reasons, payments.

Pure data, built by the solvers and read by the checker, the CLI and (later) the cluster layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from allocator.model.problem import MigInstance, Placement

__all__ = [
    "LOSS_REASONS",
    "PAYMENT_RULES",
    "SOLVERS",
    "GpuLayout",
    "Loss",
    "PaymentAudit",
    "Result",
    "Winner",
]

#: Why a bid lost. ``outbid``: it fit the cluster but others were worth more;
#: ``does_not_fit``: no alternative fits even the cluster with everything preemptible evicted;
#: ``over_budget``: every alternative's value exceeds its wallet's balance, or one would fit what
#: the winners left free but the wallet's other winners drew the balance below its value;
#: ``below_reserve``: every alternative is below the reserve price of every model it could use.
LOSS_REASONS = ("outbid", "does_not_fit", "over_budget", "below_reserve")
#: The rules that can price a round (a Result names the one that did).
PAYMENT_RULES = ("critical", "first-price", "vcg", "los")
SOLVERS = ("greedy", "local", "cpsat", "auto")


@dataclass(frozen=True, slots=True)
class Winner:
    """A winning bid: which alternative, where each replica goes, what it pays."""

    bid_id: str
    alternative: int
    value: float
    payment: float
    placements: tuple[Placement, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "placements", tuple(self.placements))


@dataclass(frozen=True, slots=True)
class Loss:
    """A losing bid and why, with the numbers (``detail``) that explain it."""

    bid_id: str
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))


@dataclass(frozen=True, slots=True)
class GpuLayout:
    """The MIG layout a GPU with a ``layout`` in the problem is to have after the round:
    ``instances`` (profile, start), and whether that is a change (``recarved``: the MIG manager
    must re-carve the GPU before the work placed there can start)."""

    node: str
    gpu: int
    instances: tuple[MigInstance, ...]
    recarved: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "instances", tuple(self.instances))


@dataclass(frozen=True, slots=True)
class PaymentAudit:
    """Exact critical payments of a sample of a round's winners against what the round's rule
    (``rule``, e.g. ``los``) charged them. Errors are |charged - exact| / bid.

    ``winners``: the round's winners; ``sampled``: the sample drawn; ``replayed``: those priced
    exactly within the time budget (``complete`` when all were). ``within_1pct``: share of the
    replayed within 1% of their bid; ``overcharged``: how many were charged more than 1% of their
    bid above exact; ``revenue_ratio``: charged / exact revenue over the replayed (None where the
    exact revenue is 0 and something was charged).
    """

    rule: str
    winners: int
    sampled: int
    replayed: int
    mean_err: float
    max_err: float
    within_1pct: float
    overcharged: int
    revenue_ratio: float | None
    time_ms: float

    @property
    def complete(self) -> bool:
        return self.replayed == self.sampled


@dataclass(frozen=True, slots=True)
class Result:
    """What a solver decided for one round.

    ``welfare`` = value of winners - (value + preemption cost) of evicted incumbents.
    ``revenue`` = sum of payments. ``utilisation`` maps a GPU model to the fraction of its
    GPU-equivalents in use after the round (incumbents kept plus winners). ``clearing_prices``
    maps a model to the lowest payment per GPU-equivalent among its winners. ``stats`` holds
    solver figures (``time_ms``, ``objective``, ``bound``, ``gap``, ``status``, ...).
    ``layouts`` gives, for every GPU that has a MIG ``layout`` in the problem, the layout it is to
    have; ``welfare`` already counts the problem's ``reconfigure_cost`` of those re-carved.
    ``audit`` compares the payments with exact critical ones on a sample of winners, where a
    cheaper rule priced a large round (None otherwise).
    """

    round_id: str
    solver: str
    payment_rule: str
    status: str
    winners: tuple[Winner, ...]
    evicted: tuple[str, ...]
    losers: tuple[Loss, ...]
    welfare: float
    revenue: float
    utilisation: Mapping[str, float] = field(default_factory=dict)
    clearing_prices: Mapping[str, float] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)
    layouts: tuple[GpuLayout, ...] = ()
    audit: PaymentAudit | None = None

    def __post_init__(self) -> None:
        for name in ("winners", "evicted", "losers", "layouts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("utilisation", "clearing_prices", "stats"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def winner(self, bid_id: str) -> Winner | None:
        """The winner entry of ``bid_id``, or None if it lost."""
        for w in self.winners:
            if w.bid_id == bid_id:
                return w
        return None
