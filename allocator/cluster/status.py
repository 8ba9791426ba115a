"""The market at a glance, read from the cluster (``gpu-allocator status``).

The last rounds from their AllocationRounds (when, solver, payment rule, bids, winners,
welfare, revenue, milliseconds per phase, clearing prices and utilisation per model), the
Wallets (balance with income, spent, available, priority), and the bids waiting for GPUs now
(pending pods of the allocator's scheduler, read as a round would read them) with the last thing
the allocator told each of them (its newest Event: ``Outbid``, ``OverBudget`` ...). Reading only:
nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client as k8s

from allocator.cluster.api import ROUND_PLURAL, WALLET_GROUP, WALLET_VERSION, fetch, our_events
from allocator.cluster.config import ClusterConfig
from allocator.cluster.read import snapshot, wallet_view

__all__ = [
    "MarketStatus",
    "PendingBid",
    "RoundSummary",
    "WalletSummary",
    "plot_status",
    "read_status",
    "status_to_dict",
]


@dataclass(frozen=True)
class RoundSummary:
    """One recorded round (an AllocationRound), as its status keeps it."""

    name: str
    created: str
    phase: str
    solver: str
    payment_rule: str
    bids: int | None
    winners: int
    evictions: int
    welfare: float
    revenue: float
    #: Milliseconds per phase (``read``, ``solve``, ``payments``, ``apply``) where recorded.
    timing_ms: Mapping[str, float] = field(default_factory=dict)
    clearing_prices: Mapping[str, float] = field(default_factory=dict)
    utilisation: Mapping[str, float] = field(default_factory=dict)
    audit: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class WalletSummary:
    """A Wallet now: ``balance`` with the income of every period started so far."""

    name: str
    priority: int
    balance: float
    income_per_period: float
    period: str | None
    spent: float
    available: float
    last_round: str | None


@dataclass(frozen=True)
class PendingBid:
    """A bid waiting for GPUs: its pods, best value, and the newest Event about its first pod
    from the allocator (None before any round told it anything)."""

    bid_id: str
    bidder: str
    wallet: str
    value: float
    pods: tuple[str, ...]
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class MarketStatus:
    """Rounds (newest first), the latest clearing price and utilisation per model (from the
    newest round that has one), wallets and pending bids."""

    namespace: str
    rounds: tuple[RoundSummary, ...]
    prices: Mapping[str, float]
    utilisation: Mapping[str, float]
    wallets: tuple[WalletSummary, ...]
    pending: tuple[PendingBid, ...]


def read_status(
    api: Any,
    namespace: str,
    rounds: int = 10,
    config: ClusterConfig | None = None,
    now: datetime | None = None,
) -> MarketStatus:
    """The market as the cluster behind ``api`` shows it: the newest ``rounds`` AllocationRounds
    of ``namespace`` (where ``run --lease NS/NAME`` records them), every Wallet, the pending
    bids. ValueError if ``rounds`` < 1."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: must be an integer >= 1, got {rounds!r}")
    t = now or datetime.now(UTC)
    custom: Any = k8s.CustomObjectsApi(api)
    listed = custom.list_namespaced_custom_object(
        WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL
    )
    records = sorted(
        listed["items"],
        key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]),
        reverse=True,
    )[:rounds]
    summaries = tuple(_round(o) for o in records)
    nodes, pods, wallets = fetch(api, config)
    snap = snapshot(nodes, pods, wallets, config, now=t)
    told = _newest_events(k8s.CoreV1Api(api))
    pending = []
    for bid in snap.problem.bids:
        pods_of = snap.pods_of_bid.get(bid.id, ())
        event = told.get(pods_of[0]) if pods_of else None
        pending.append(
            PendingBid(
                bid_id=bid.id,
                bidder=bid.bidder,
                wallet=bid.wallet,
                value=max(a.value for a in bid.alternatives),
                pods=tuple(pods_of),
                reason=None if event is None else event[1],
                message=None if event is None else event[2],
            )
        )
    return MarketStatus(
        namespace=namespace,
        rounds=summaries,
        prices=_newest_per_model(summaries, "clearing_prices"),
        utilisation=dict(summaries[0].utilisation) if summaries else {},
        wallets=tuple(_wallet(w, t) for w in sorted(wallets, key=_wallet_name)),
        pending=tuple(sorted(pending, key=lambda p: (-p.value, p.bid_id))),
    )


def _round(o: Mapping[str, Any]) -> RoundSummary:
    spec = o.get("spec") or {}
    st = o.get("status") or {}
    timing = st.get("timing") or {}
    return RoundSummary(
        name=o["metadata"]["name"],
        created=o["metadata"].get("creationTimestamp", ""),
        phase=st.get("phase", ""),
        solver=st.get("solverUsed") or spec.get("solver", ""),
        payment_rule=spec.get("paymentRule", ""),
        bids=st.get("bids"),
        winners=int(st.get("winners", 0)),
        evictions=int(st.get("evictions", 0)),
        welfare=float(st.get("welfare", 0.0)),
        revenue=float(st.get("revenue", 0.0)),
        timing_ms={k.removesuffix("Ms"): float(v) for k, v in timing.items()},
        clearing_prices={k: float(v) for k, v in (st.get("clearingPrices") or {}).items()},
        utilisation={k: float(v) for k, v in (st.get("utilisation") or {}).items()},
        audit=st.get("audit"),
    )


def _newest_per_model(rounds: Sequence[RoundSummary], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rounds:  # newest first: the first value seen per model stays
        for model, value in getattr(r, what).items():
            out.setdefault(model, value)
    return dict(sorted(out.items()))


def _wallet_name(w: Mapping[str, Any]) -> str:
    meta = w.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _wallet(w: Mapping[str, Any], now: datetime) -> WalletSummary:
    view = wallet_view(w, now)
    return WalletSummary(
        name=_wallet_name(w),
        priority=view.priority,
        balance=view.balance,
        income_per_period=view.income_per_period,
        period=view.period,
        spent=view.spent,
        available=view.available,
        last_round=(w.get("status") or {}).get("lastRound"),
    )


def _newest_events(core: Any) -> dict[str, tuple[str, str, str]]:
    """``namespace/name`` of a pod -> (time, reason, message) of the newest Event the allocator
    wrote about it."""
    out: dict[str, tuple[str, str, str]] = {}
    for item in our_events(core, "involvedObject.kind=Pod"):
        obj = item.get("involvedObject") or {}
        pod = f"{obj.get('namespace', '')}/{obj.get('name', '')}"
        when = item.get("lastTimestamp") or item.get("firstTimestamp") or ""
        seen = (when, str(item.get("reason", "")), str(item.get("message", "")))
        if pod not in out or seen[0] >= out[pod][0]:
            out[pod] = seen
    return out


def status_to_dict(status: MarketStatus) -> dict[str, Any]:
    """The JSON form (``gpu-allocator status --json``)."""
    return asdict(status)


def plot_status(status: MarketStatus, path: str | Path) -> None:
    """Clearing price per GPU-equivalent and utilisation per model over the kept rounds (oldest
    to newest), as a PNG. Needs matplotlib (the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'gpu-allocator[plot]'") from None
    rounds = list(reversed(status.rounds))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = list(range(len(rounds)))
    for what, ax, label in (
        ("clearing_prices", top, "clearing price per GPU-eq"),
        ("utilisation", bottom, "utilisation"),
    ):
        models = sorted({m for r in rounds for m in getattr(r, what)})
        for model in models:
            ys = [getattr(r, what).get(model, float("nan")) for r in rounds]
            ax.plot(x, ys, marker="o", label=model)
        ax.set_ylabel(label)
        if models:
            ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    bottom.set_ylim(0, 1.05)
    bottom.set_xticks(x, [r.name for r in rounds], rotation=30, ha="right", fontsize="x-small")
    top.set_title(f"gpu-allocator rounds in {status.namespace} (oldest to newest)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
