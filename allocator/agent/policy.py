"""Negotiation policies: what an agent does each round (pure decisions: no I/O).

A :class:`Policy` looks at a :class:`RoundView` (its workloads, the market, its wallet, the
time) and returns :data:`Action` values; ``allocator.agent.run.run_agent`` applies them. A
policy may keep state between rounds (when it first saw a workload, say), but reads nothing
but the view and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from allocator.agent.status import WorkloadStatus
from allocator.agent.workload import WorkloadSpec
from allocator.model.market import MarketView, WalletView

__all__ = [
    "Action",
    "Chain",
    "DeadlinePolicy",
    "Keep",
    "Policy",
    "RaiseBid",
    "RoundView",
    "Shrink",
    "ShrinkWhenOutbid",
    "Submit",
    "Withdraw",
    "WithdrawAbove",
    "reference_price",
]


@dataclass(frozen=True)
class RoundView:
    """What a policy sees once per round: the round id, the time, the agent's workloads, the
    market ConfigMap (None before the allocator wrote one) and the wallet in it."""

    round_id: str
    now: datetime
    workloads: tuple[WorkloadStatus, ...] = ()
    market: MarketView | None = None
    wallet: WalletView | None = None

    def workload(self, name: str) -> WorkloadStatus | None:
        """The status of workload ``name``, or None."""
        for w in self.workloads:
            if w.name == name:
                return w
        return None

    def quote(self, model_or_profile: str) -> float | None:
        """The market's latest clearing price per GPU-equivalent of a model or MIG profile."""
        return self.market.quote(model_or_profile) if self.market else None


@dataclass(frozen=True)
class RaiseBid:
    """Re-price the waiting pods of workload ``name`` to ``value`` in all."""

    name: str
    value: float
    reason: str = ""


@dataclass(frozen=True)
class Withdraw:
    """Delete every pod of workload ``name``."""

    name: str
    reason: str = ""


@dataclass(frozen=True)
class Shrink:
    """Replace waiting workload ``name`` by one with ``replicas`` pods and/or MIG profile
    ``mig_profile`` (None: unchanged), worth ``bid`` (None: the same total bid)."""

    name: str
    replicas: int | None = None
    mig_profile: str | None = None
    bid: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Submit:
    """Create a new workload."""

    spec: WorkloadSpec
    reason: str = ""

    @property
    def name(self) -> str:
        """The new workload's name."""
        return self.spec.name


@dataclass(frozen=True)
class Keep:
    """Do nothing (to workload ``name``, or at all), and say why."""

    name: str | None = None
    reason: str = ""


Action = RaiseBid | Withdraw | Shrink | Submit | Keep


class Policy(Protocol):
    """Decides the round's actions from the view; must do no I/O."""

    def decide(self, view: RoundView) -> list[Action]:
        """The actions to take this round (an empty list: nothing)."""
        ...


def _selected(view: RoundView, names: Collection[str] | None) -> list[WorkloadStatus]:
    """The waiting workloads of ``view`` that ``names`` selects (None: all)."""
    return [w for w in view.workloads if w.waiting and (names is None or w.name in names)]


def _names(workloads: Collection[str] | None) -> frozenset[str] | None:
    return None if workloads is None else frozenset(workloads)


CURVES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: p,
    "quadratic": lambda p: p * p,  # holds back early, climbs steeply near the deadline
    "sqrt": math.sqrt,  # climbs early, flattens near the deadline
}


@dataclass
class DeadlinePolicy:
    """Raise a bid toward ``value`` as ``deadline`` nears: the bid at time t is
    ``value * (start_fraction + (1 - start_fraction) * curve(progress))``, where ``progress``
    runs from 0 at ``start`` (default: when the policy first sees the workload) to 1 at the
    deadline, and ``curve`` is ``linear`` (default), ``quadratic``, ``sqrt`` or a function from
    [0, 1] onto [0, 1]. It never lowers a bid and never goes past the workload's
    ``max_price``. Applies to the waiting workloads named in ``workloads`` (None: all)."""

    value: float
    deadline: datetime
    start_fraction: float = 0.5
    curve: str | Callable[[float], float] = "linear"
    start: datetime | None = None
    workloads: Collection[str] | None = None
    _first_seen: dict[str, datetime] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value: must be finite and >= 0, got {self.value!r}")
        if not 0 <= self.start_fraction <= 1:
            raise ValueError(f"start_fraction: must be in 0..1, got {self.start_fraction!r}")
        if isinstance(self.curve, str) and self.curve not in CURVES:
            raise ValueError(f"curve: one of {', '.join(CURVES)} or a function")
        if self.deadline.tzinfo is None:
            raise ValueError("deadline: needs a time zone")
        self.workloads = _names(self.workloads)

    def bid_at(self, now: datetime, start: datetime) -> float:
        """The bid this policy wants at ``now`` for a workload first seen at ``start``."""
        span = (self.deadline - start).total_seconds()
        progress = 1.0 if span <= 0 else (now - start).total_seconds() / span
        progress = min(max(progress, 0.0), 1.0)
        curve = CURVES[self.curve] if isinstance(self.curve, str) else self.curve
        shaped = min(max(curve(progress), 0.0), 1.0)
        return self.value * (self.start_fraction + (1 - self.start_fraction) * shaped)

    def decide(self, view: RoundView) -> list[Action]:
        """RaiseBid for each selected waiting workload bidding below the curve."""
        actions: list[Action] = []
        for w in _selected(view, self.workloads):
            start = self.start or self._first_seen.setdefault(w.name, view.now)
            target = self.bid_at(view.now, start)
            if w.spec is not None and w.spec.max_price is not None:
                target = min(target, w.spec.max_price)
            left = self.deadline - view.now
            if w.bid is None or target > w.bid * (1 + 1e-9):
                was = "none" if w.bid is None else f"{w.bid:.4g}"
                why = f"deadline in {_human(left)}: {was} -> {target:.4g}"
                actions.append(RaiseBid(w.name, target, why))
            else:
                actions.append(Keep(w.name, f"bid {w.bid:g} on course ({_human(left)} left)"))
        return actions


def _human(delta: timedelta) -> str:
    s = delta.total_seconds()
    if s <= 0:
        return "0 s (past)"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def reference_price(view: RoundView, w: WorkloadStatus, model: str | None = None) -> float | None:
    """The clearing price per GPU-equivalent that matters to workload ``w``: of ``model`` when
    given; else of its MIG profile; else the cheapest whole-GPU model's (models without
    ``-MIG-`` in their name), from the newest price record that has one."""
    if view.market is None:
        return None
    if model is not None:
        return view.market.quote(model)
    if w.spec is not None and w.spec.mig_profile is not None:
        return view.market.quote(w.spec.mig_profile)
    for record in reversed(view.market.prices):
        whole = [p for m, p in record.clearing.items() if "-MIG-" not in m]
        if whole:
            return min(whole)
    return None


@dataclass
class WithdrawAbove:
    """Withdraw waiting workloads once the clearing price per GPU-equivalent that matters to
    them (:func:`reference_price`; ``model`` fixes the model or MIG profile) passes ``value``
    (what a GPU-equivalent is worth to the agent). Running workloads are left alone: they paid
    when they won. Applies to the workloads named in ``workloads`` (None: all)."""

    value: float
    model: str | None = None
    workloads: Collection[str] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value: must be finite and >= 0, got {self.value!r}")
        self.workloads = _names(self.workloads)

    def decide(self, view: RoundView) -> list[Action]:
        """Withdraw for each selected waiting workload whose price passed the value."""
        actions: list[Action] = []
        for w in _selected(view, self.workloads):
            price = reference_price(view, w, self.model)
            if price is not None and price > self.value:
                actions.append(Withdraw(w.name, f"clearing {price:g} > value {self.value:g}"))
        return actions


@dataclass
class ShrinkWhenOutbid:
    """When the last round outbid a waiting workload, ask for less: the next smaller MIG profile
    of ``profiles`` (largest first) if it has one, else half its replicas (rounded up), never
    below ``min_replicas``; the total bid stays, so its value per GPU-equivalent rises. Acts
    once per loss (only on an outcome of the view's round). Applies to the workloads named in
    ``workloads`` (None: all)."""

    min_replicas: int = 1
    profiles: Sequence[str] = ()
    workloads: Collection[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_replicas, bool) or self.min_replicas < 1:
            raise ValueError(f"min_replicas: must be an integer >= 1, got {self.min_replicas!r}")
        self.profiles = tuple(self.profiles)
        self.workloads = _names(self.workloads)

    def decide(self, view: RoundView) -> list[Action]:
        """Shrink for each selected workload outbid in this round, while it can."""
        actions: list[Action] = []
        for w in _selected(view, self.workloads):
            o = w.outcome
            if o is None or o.outcome != "outbid" or o.round_id != view.round_id:
                continue
            spec = w.spec
            if spec is None:
                continue
            if spec.mig_profile is not None and spec.mig_profile in self.profiles:
                i = list(self.profiles).index(spec.mig_profile)
                if i + 1 < len(self.profiles):
                    smaller = self.profiles[i + 1]
                    actions.append(Shrink(w.name, mig_profile=smaller, reason=f"outbid: {smaller}"))
                    continue
            if spec.replicas > self.min_replicas:
                fewer = max(self.min_replicas, math.ceil(spec.replicas / 2))
                actions.append(Shrink(w.name, replicas=fewer, reason=f"outbid: {fewer} replicas"))
            else:
                actions.append(Keep(w.name, "outbid, already at its smallest"))
        return actions


@dataclass
class Chain:
    """Several policies in order; an action on a workload that an earlier policy already acted
    on (anything but Keep) is dropped, so the first policy to act wins."""

    policies: Sequence[Policy]

    def decide(self, view: RoundView) -> list[Action]:
        """Every policy's actions, first come first served per workload."""
        taken: set[str] = set()
        actions: list[Action] = []
        for policy in self.policies:
            for a in policy.decide(view):
                if isinstance(a, Keep):
                    if a.name not in taken:
                        actions.append(a)
                    continue
                if a.name in taken:
                    continue
                taken.add(a.name)
                actions = [k for k in actions if not (isinstance(k, Keep) and k.name == a.name)]
                actions.append(a)
        return actions
