"""Turn a round's Result into the writes that apply it (pure; ``allocator.cluster.api`` runs them).

The plan is data: bindings (pod -> node, with the GPU indices to annotate), evictions, one ledger
entry per charged wallet (keyed by the round id, so applying a plan twice charges nothing twice)
and one event per bid. ``describe`` prints it for ``--dry-run``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from allocator.cluster.read import Snapshot
from allocator.model import Result

__all__ = ["WON", "Binding", "Charge", "Eviction", "Notice", "Plan", "describe", "plan_round"]


@dataclass(frozen=True, slots=True)
class Binding:
    """Bind pod ``namespace/name`` to ``node``; ``gpus`` are the GPU indices it gets, ``price``
    what it pays (its share of its bid's payment), ``origin`` how an agent names it (empty for
    a pod that is not an agent's)."""

    pod: str
    node: str
    gpus: tuple[int, ...]
    milli: int = 0
    price: float = 0.0
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Eviction:
    """Evict running pod ``namespace/name`` (through the Eviction API) from ``node`` (``None``
    when not known, as in a plan read back from an AllocationRound: then every binding of the
    round waits for it)."""

    pod: str
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """Debit ``amount`` from Wallet ``namespace/name`` for this round, split over its pods."""

    wallet: str
    amount: float
    pods: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """An event about object ``name`` (``namespace/name``; a node: its name) of ``kind`` (Pod,
    Wallet or Node; ``uid`` when known): reason ``Won``, ``Outbid``, ``DoesNotFit``,
    ``OverBudget``, ``BelowReserve``, ``Skipped`` (a malformed object left out of the round,
    the field named) or ``Malformed`` (a running pod with a bad annotation, kept holding its
    GPUs; a node whose inventory annotation does not match its GPUs, kept without NVLink
    domains), with a message carrying the numbers."""

    name: str
    reason: str
    message: str
    warning: bool = False
    kind: str = "Pod"
    uid: str | None = None


@dataclass(frozen=True)
class Plan:
    """Everything one round writes."""

    round_id: str
    bindings: tuple[Binding, ...] = ()
    evictions: tuple[Eviction, ...] = ()
    charges: tuple[Charge, ...] = ()
    notices: tuple[Notice, ...] = field(default=())

    @property
    def only_events(self) -> bool:
        """True when the plan binds, evicts and charges nothing (at most it emits events)."""
        return not (self.bindings or self.evictions or self.charges)


WON = "Won"  # the reason of a winner's event (the others say why a bid lost)

_REASON = {
    "outbid": "Outbid",
    "does_not_fit": "DoesNotFit",
    "over_budget": "OverBudget",
    "below_reserve": "BelowReserve",
}


def plan_round(snap: Snapshot, result: Result) -> Plan:
    """The writes that apply ``result`` (solved on ``snap.problem``)."""
    if result.round_id != snap.problem.round_id:
        raise ValueError(
            f"round_id: result is for {result.round_id!r}, snapshot is {snap.problem.round_id!r}"
        )
    bindings, won, owed = _winners(snap, result)
    notices = won + _loser_notices(snap, result) + _skipped_notices(snap, result.round_id)
    charges = tuple(
        Charge(wallet, sum(a for _, a in pods), tuple(pods))
        for wallet, pods in sorted(owed.items())
        if sum(a for _, a in pods) > 0
    )
    return Plan(result.round_id, tuple(bindings), _evictions(snap, result), charges, tuple(notices))


def _winners(
    snap: Snapshot, result: Result
) -> tuple[list[Binding], list[Notice], dict[str, list[tuple[str, float]]]]:
    """The winners' bindings (a pod pays its share of the bid's payment), their events, and
    what each wallet owes, pod by pod."""
    wallet_of = {b.id: b.wallet for b in snap.problem.bids}
    bindings: list[Binding] = []
    notices: list[Notice] = []
    owed: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for w in result.winners:
        pods = snap.pods_of_bid[w.bid_id]
        if len(pods) != len(w.placements):
            raise ValueError(
                f"winners[{w.bid_id}]: {len(w.placements)} placements for {len(pods)} pods"
            )
        share = w.payment / len(pods)
        for pod, pl in zip(pods, w.placements, strict=True):
            origin = snap.display_name(pod) if pod in snap.origins else ""
            bindings.append(Binding(pod, pl.node, tuple(pl.gpus), pl.milli, share, origin))
            owed[wallet_of[w.bid_id]].append((pod, share))
            notices.append(
                Notice(
                    pod,
                    WON,
                    f"round {result.round_id}: {_who(snap, pod)}bid {w.value:g}, "
                    f"pays {w.payment:g} ({share:g} for this pod), on {pl.node} GPUs "
                    f"{list(pl.gpus)}",
                    uid=snap.pod_uids.get(pod),
                )
            )
    return bindings, notices, owed


def _loser_notices(snap: Snapshot, result: Result) -> list[Notice]:
    """A warning per pod of each losing bid, saying why it lost."""
    notices = []
    for loss in result.losers:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(loss.detail.items()))
        for pod in snap.pods_of_bid.get(loss.bid_id, ()):
            notices.append(
                Notice(
                    pod,
                    _REASON.get(loss.reason, loss.reason),
                    f"round {result.round_id}: {_who(snap, pod)}{loss.reason.replace('_', ' ')}"
                    + (f" ({detail})" if detail else ""),
                    warning=True,
                    uid=snap.pod_uids.get(pod),
                )
            )
    return notices


def _skipped_notices(snap: Snapshot, round_id: str) -> list[Notice]:
    """A warning per object the reader left out, or kept despite a malformed annotation."""
    notices = []
    for s in snap.skipped:
        if s.kept:  # a running pod still in the round, holding its GPUs; a node without NVLink
            what = "kept as running, not preemptible, despite" if s.kind == "Pod" else "kept"
            reason = "Malformed"
        else:
            what, reason = "left out", "Skipped"
        who = _who(snap, s.name) if s.kind == "Pod" else ""
        message = f"round {round_id}: {who}{what}: {s.field}: {s.reason}"
        notices.append(Notice(s.name, reason, message, True, s.kind, s.uid))
    return notices


def _evictions(snap: Snapshot, result: Result) -> tuple[Eviction, ...]:
    """The pods of the evicted incumbents, each with its node when known."""
    evictions: list[Eviction] = []
    placements = {i.id: i.placements for i in snap.problem.incumbents}
    for inc in result.evicted:
        pods = snap.pods_of_incumbent.get(inc, ())
        # One placement per pod, in order (how the reader builds incumbents); else unknown.
        nodes = [pl.node for pl in placements.get(inc, ())]
        known = len(nodes) == len(pods)
        evictions += [Eviction(pod, nodes[i] if known else None) for i, pod in enumerate(pods)]
    return tuple(evictions)


def _who(snap: Snapshot, pod: str) -> str:
    """The prefix naming an agent's pod as its agent knows it (empty for other pods)."""
    return f"{snap.display_name(pod)}: " if pod in snap.origins else ""


def describe(plan: Plan) -> str:
    """A readable listing of the plan (what ``--dry-run`` prints)."""
    lines = [
        f"round {plan.round_id}: {len(plan.bindings)} bindings, "
        f"{len(plan.evictions)} evictions, {len(plan.charges)} wallet charges"
    ]
    lines += [
        f"  bind {b.pod}{f' ({b.origin})' if b.origin else ''} -> {b.node} gpus {list(b.gpus)}"
        for b in plan.bindings
    ]
    lines += [f"  evict {e.pod}" for e in plan.evictions]
    lines += [f"  charge {c.wallet} {c.amount:g}" for c in plan.charges]
    lines += [f"  event {n.kind} {n.name} {n.reason}: {n.message}" for n in plan.notices]
    return "\n".join(lines)
