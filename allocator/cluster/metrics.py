"""Prometheus metrics of the long-running mode (``run --interval --metrics-port PORT``).

Names follow Prometheus's naming guide: a ``gpualloc_`` prefix, base units in the name
(``_seconds``, ``_ratio``), ``_total`` on counters, labels from bounded sets only (outcome, phase,
loss reason, GPU model, wallet). Gauges describe the newest round that ran; counters add up over
the process's life. Money (bid values, payments, wallets) is in the market's own unit, which has
no base unit to name.

- ``gpualloc_rounds_total{outcome}``: rounds by outcome: ``applied``, ``dry_run``,
  ``not_leader`` (another process held the Lease), ``failed`` (the round raised);
- ``gpualloc_round_phase_seconds{phase}``: histogram of each phase: ``read``, ``solve``,
  ``payments`` (the audit included), ``apply``;
- ``gpualloc_round_timestamp_seconds``: when the newest round ended (Unix time);
- ``gpualloc_pending_wait_seconds``: the longest wait (since its pod's creation) of a bid still
  pending after the newest round; ``gpualloc_bind_wait_seconds``: histogram of how long the
  winners of applied rounds had waited;
- ``gpualloc_pending_bids``, ``gpualloc_round_winners``, ``gpualloc_round_losers{reason}``,
  ``gpualloc_round_welfare``, ``gpualloc_round_revenue``: the newest round;
- ``gpualloc_clearing_price{model}``: lowest payment per GPU-equivalent among the model's
  winners in the newest round (absent for a model nobody won);
- ``gpualloc_allocated_gpu_equivalents{model}``, ``gpualloc_gpu_equivalents{model}``,
  ``gpualloc_utilisation_ratio{model}``: in use after the newest round, capacity, their ratio;
- ``gpualloc_revenue_total``, ``gpualloc_preemptions_total``, ``gpualloc_bindings_total``,
  ``gpualloc_mig_recarvings_total``: what applied rounds charged, evicted, bound, and the nodes
  whose MIG layout rounds asked to change;
- ``gpualloc_wallet_available{wallet}`` (what it could spend when the newest round read it),
  ``gpualloc_wallet_spend{wallet}`` (what the newest round charged it),
  ``gpualloc_wallet_spent_total{wallet}`` (charged by this process's applied rounds);
- ``gpualloc_payment_audit_error_ratio{stat}`` (``mean``, ``max``): the newest audit of a
  round priced by ``los`` (docs/concepts.md), errors as fractions of the bid.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from allocator.model import LOSS_REASONS
from allocator.solvers.assemble import capacity_by_model

if TYPE_CHECKING:
    from allocator.cluster.loop import RoundOutcome

__all__ = ["PHASES", "RoundMetrics"]

PHASES = ("read", "solve", "payments", "apply")
# Seconds: from a small round's milliseconds to a large apply's minute.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Seconds a bid waits: from a round's interval to a day.
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class RoundMetrics:
    """The metrics of a loop's rounds, in a registry of their own (``registry``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server: Any = None
        r = self.registry
        self.rounds = Counter("gpualloc_rounds", "Rounds by outcome", ["outcome"], registry=r)
        self.phase = Histogram(
            "gpualloc_round_phase_seconds",
            "Time of each phase of a round",
            ["phase"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.ended = Gauge(
            "gpualloc_round_timestamp_seconds", "When the newest round ended", registry=r
        )
        self.pending = Gauge("gpualloc_pending_bids", "Bids in the newest round", registry=r)
        self.winners = Gauge("gpualloc_round_winners", "Winners of the newest round", registry=r)
        self.losers = Gauge(
            "gpualloc_round_losers", "Losers of the newest round by reason", ["reason"], registry=r
        )
        self.waiting = Gauge(
            "gpualloc_pending_wait_seconds",
            "Longest wait of a bid still pending after the newest round (since its pod's creation)",
            registry=r,
        )
        self.bind_wait = Histogram(
            "gpualloc_bind_wait_seconds",
            "How long the bids of applied rounds had waited when they won",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.welfare = Gauge("gpualloc_round_welfare", "Welfare of the newest round", registry=r)
        self.revenue = Gauge("gpualloc_round_revenue", "Revenue of the newest round", registry=r)
        self.price = Gauge(
            "gpualloc_clearing_price",
            "Lowest payment per GPU-equivalent among the model's winners (newest round)",
            ["model"],
            registry=r,
        )
        self.allocated = Gauge(
            "gpualloc_allocated_gpu_equivalents",
            "GPU-equivalents in use after the newest round",
            ["model"],
            registry=r,
        )
        self.capacity = Gauge(
            "gpualloc_gpu_equivalents", "GPU-equivalents of the model", ["model"], registry=r
        )
        self.utilisation = Gauge(
            "gpualloc_utilisation_ratio",
            "Fraction of the model's GPU-equivalents in use after the newest round",
            ["model"],
            registry=r,
        )
        self.revenue_total = Counter(
            "gpualloc_revenue", "Payments charged by applied rounds", registry=r
        )
        self.preemptions = Counter(
            "gpualloc_preemptions", "Pods evicted by applied rounds", registry=r
        )
        self.bindings = Counter("gpualloc_bindings", "Pods bound by applied rounds", registry=r)
        self.recarvings = Counter(
            "gpualloc_mig_recarvings",
            "Nodes whose MIG layout rounds asked the MIG manager to change",
            registry=r,
        )
        self.available = Gauge(
            "gpualloc_wallet_available",
            "What the wallet could spend when the newest round read it",
            ["wallet"],
            registry=r,
        )
        self.spend = Gauge(
            "gpualloc_wallet_spend",
            "What the newest round charged the wallet",
            ["wallet"],
            registry=r,
        )
        self.spent_total = Counter(
            "gpualloc_wallet_spent",
            "What this process's applied rounds charged the wallet",
            ["wallet"],
            registry=r,
        )
        self.audit = Gauge(
            "gpualloc_payment_audit_error_ratio",
            "Newest payment audit: error against exact critical payments / bid",
            ["stat"],
            registry=r,
        )
        for outcome in ("applied", "dry_run", "not_leader", "failed"):
            self.rounds.labels(outcome)  # every outcome exported from the start, at 0

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``address:port`` from a daemon thread until :meth:`stop`."""
        self._server, _thread = start_http_server(port, address, registry=self.registry)

    def stop(self) -> None:
        """Stop serving (the port is free again)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def failed(self) -> None:
        """A round that raised."""
        self.rounds.labels("failed").inc()

    def observe(self, outcome: RoundOutcome) -> None:
        """A round that ran to its end."""
        result, plan, problem = outcome.result, outcome.plan, outcome.snapshot.problem
        if not outcome.leader:
            kind = "not_leader"
        elif outcome.report is None:
            kind = "dry_run"
        else:
            kind = "applied"
        for phase in PHASES:
            if phase in outcome.timings:
                self.phase.labels(phase).observe(outcome.timings[phase] / 1000.0)
        self.ended.set(time.time())
        self.pending.set(len(problem.bids))
        self.winners.set(len(result.winners))
        counts = dict.fromkeys(LOSS_REASONS, 0)
        for loss in result.losers:
            counts[loss.reason] = counts.get(loss.reason, 0) + 1
        for reason, n in counts.items():
            self.losers.labels(reason).set(n)
        waits = outcome.snapshot.bid_waits
        self.waiting.set(max((waits.get(x.bid_id, 0.0) for x in result.losers), default=0.0))
        self.welfare.set(result.welfare)
        self.revenue.set(result.revenue)
        capacity = capacity_by_model(problem)
        self.price.clear()  # a model nobody won this round has no clearing price
        for model, price in result.clearing_prices.items():
            self.price.labels(model).set(price)
        for gauge in (self.allocated, self.capacity, self.utilisation):
            gauge.clear()
        for model, share in result.utilisation.items():
            self.utilisation.labels(model).set(share)
            self.capacity.labels(model).set(capacity.get(model, 0.0))
            self.allocated.labels(model).set(share * capacity.get(model, 0.0))
        self.available.clear()
        self.spend.clear()
        for wallet in problem.wallets:
            self.available.labels(wallet.name).set(wallet.balance)
            self.spend.labels(wallet.name).set(0.0)
        self.recarvings.inc(len(outcome.layout_changes))
        if result.audit is not None:
            self.audit.labels("mean").set(result.audit.mean_err)
            self.audit.labels("max").set(result.audit.max_err)
        if kind == "applied":
            self.revenue_total.inc(result.revenue)
            self.preemptions.inc(len(plan.evictions))
            self.bindings.inc(len(plan.bindings))
            for w in result.winners:
                if w.bid_id in waits:
                    self.bind_wait.observe(waits[w.bid_id])
            for charge in plan.charges:
                self.spend.labels(charge.wallet).set(charge.amount)
                self.spent_total.labels(charge.wallet).inc(charge.amount)
        # Last: a scrape that sees the round counted sees its figures (they are set above).
        self.rounds.labels(kind).inc()
