"""What each agent sees of a round in its own cluster (pure: Snapshot, Result, Plan in; views out).

After a round the allocator writes, into every agent's own API server, the ``gpualloc-market``
ConfigMap (format: :mod:`allocator.model.market`): the agent's Wallet after the round's charges,
the market's clearing prices and utilisation per GPU model (MIG profiles included, as their
pseudo-models) with the last rounds' history, and the outcome of each of its pods that took part
in the round, named as the agent knows them. :mod:`allocator.cluster.publish` does the writing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from allocator.cluster.plan import Plan
from allocator.cluster.read import Snapshot
from allocator.model import Loss, Result
from allocator.model.market import OUTCOME_OF_REASON, MarketView, PodOutcome, WalletView

__all__ = ["agent_outcomes", "agent_views"]


def agent_outcomes(snap: Snapshot, result: Result, plan: Plan) -> dict[str, dict[str, PodOutcome]]:
    """Per agent: each of its pods in the round (named as in its own cluster) -> its outcome,
    with the numbers of the round's Event about it."""
    bid_of_pod = {pod: bid for bid, pods in snap.pods_of_bid.items() for pod in pods}
    per_pod = {  # a bid's value per pod
        b.id: b.alternatives[0].value / len(snap.pods_of_bid[b.id])
        for b in snap.problem.bids
        if snap.pods_of_bid.get(b.id)
    }
    losses = {loss.bid_id: loss for loss in result.losers}
    bindings = {b.pod: b for b in plan.bindings}
    out: dict[str, dict[str, PodOutcome]] = defaultdict(dict)
    for notice in plan.notices:
        origin = snap.origins.get(notice.name)
        outcome = OUTCOME_OF_REASON.get(notice.reason)
        if notice.kind != "Pod" or origin is None or outcome is None:
            continue
        bid = bid_of_pod.get(notice.name)
        binding = bindings.get(notice.name)
        loss = losses.get(bid) if bid is not None else None
        out[origin.agent][origin.name] = PodOutcome(
            round_id=result.round_id,
            outcome=outcome,
            bid=per_pod.get(bid) if bid is not None else None,
            payment=binding.price if binding is not None else None,
            node=binding.node if binding is not None else None,
            gpus=binding.gpus if binding is not None else (),
            detail=_detail(loss) if loss is not None else {},
            message=notice.message,
        )
    return dict(out)


def _detail(loss: Loss) -> dict[str, float | str]:
    """A loss's detail as the ConfigMap holds it: numbers and strings (a flag as its text)."""
    detail: dict[str, float | str] = {}
    for k, v in loss.detail.items():
        if isinstance(v, bool):
            detail[k] = str(v)
        elif isinstance(v, int | float | str):
            detail[k] = v
    return detail


def _after_charges(wallet: WalletView, charged: float) -> WalletView:
    return replace(
        wallet,
        spent=wallet.spent + charged,
        available=max(wallet.available - charged, 0.0),
    )


def agent_views(
    snap: Snapshot,
    result: Result,
    plan: Plan,
    previous: Mapping[str, MarketView | None],
    now: datetime,
) -> dict[str, MarketView]:
    """The ConfigMap each agent of the round gets: ``previous`` (what its cluster holds now, or
    None) with this round appended. Every agent with a Wallet gets one, also without pods."""
    outcomes = agent_outcomes(snap, result, plan)
    charged: dict[str, float] = defaultdict(float)
    wallet_of_agent = {agent: f"{ns}/{agent}" for ns, agent in snap.agents.items()}
    for c in plan.charges:
        charged[c.wallet] += c.amount
    views: dict[str, MarketView] = {}
    for agent, wallet in sorted(snap.agent_wallets.items()):
        after = _after_charges(wallet, charged.get(wallet_of_agent.get(agent, ""), 0.0))
        base = previous.get(agent) or MarketView(agent=agent, round_id=result.round_id, updated=now)
        views[agent] = base.with_round(
            result.round_id,
            now,
            clearing=dict(result.clearing_prices),
            utilisation={m: min(max(u, 0.0), 1.0) for m, u in result.utilisation.items()},
            outcomes=outcomes.get(agent, {}),
            wallet=after,
        )
    return views
