"""Rounds against a live cluster: read -> solve -> plan -> apply.

``run_once`` (the CronJob's whole body) fetches nodes, pods and wallets, builds the Problem,
solves it, turns the Result into a Plan and applies it (unless ``dry_run``), as its
:class:`~allocator.cluster.options.RoundOptions` say (the solve's own options are one
:class:`~allocator.solvers.params.SolveParams` in them). ``dump_snapshot``
writes the Problem as the JSON that ``gpu-allocator solve`` reads, so any round can be replayed
offline. ``run_rounds`` (the Deployment's body) calls ``run_once`` every ``interval`` seconds
until told to stop; a failing round is logged and the next one reads the cluster afresh.
``watch_rounds`` (``run --watch``) calls it when the bids change (watch streams, debounced;
see :mod:`allocator.cluster.watch`), and at least every ``interval`` seconds.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allocator.cluster.api import (
    ApplyReport,
    acquire_lease,
    add_mig_configs,
    apply_plan,
    camel_keys,
    fetch,
    finish_round,
    patch_node_metadata,
    prune_rounds,
    record_round,
    release_lease,
    unfinished_rounds,
)
from allocator.cluster.config import ClusterConfig
from allocator.cluster.mig import LayoutChange, layout_changes, settle, to_instances
from allocator.cluster.options import KEEP_ROUNDS, RoundOptions
from allocator.cluster.plan import Notice, Plan, plan_round
from allocator.cluster.publish import AgentClusters, PublishReport, publish_round
from allocator.cluster.read import Snapshot, snapshot
from allocator.cluster.watch import ClusterWatch, Debouncer, RoundTrigger
from allocator.model import ProblemError, Result, audit_to_dict, problem_to_dict
from allocator.solvers import solve

__all__ = [
    "DEBOUNCE",
    "KEEP_ROUNDS",
    "MAX_DELAY",
    "RoundOptions",
    "RoundOutcome",
    "RoundsSummary",
    "new_round_id",
    "run_once",
    "run_rounds",
    "watch_rounds",
]

log = logging.getLogger(__name__)

#: Watch mode: a round starts once changes have paused this many seconds ...
DEBOUNCE = 0.2
#: ... but at most this many seconds after the first change it answers.
MAX_DELAY = 1.0
#: Watch mode: seconds the first round waits for the watches' first lists.
SYNC_TIMEOUT = 30.0


@dataclass(frozen=True)
class RoundOutcome:
    """What a round read, decided and (unless a dry run) wrote; ``trigger``: why the round
    started (set by :func:`run_rounds` and :func:`watch_rounds`; None for :func:`run_once`)."""

    snapshot: Snapshot
    result: Result
    plan: Plan
    report: ApplyReport | None
    leader: bool = True
    repaired: tuple[str, ...] = ()
    published: PublishReport | None = None
    # Last, so that positional construction of the fields above is unaffected.
    trigger: RoundTrigger | None = None
    #: MIG layout changes the round asked for (with --mig-planning).
    layout_changes: tuple[LayoutChange, ...] = ()
    #: Milliseconds per phase: ``read`` (the cluster, into a Problem), ``solve`` (allocation),
    #: ``payments`` (the pricing, an audit included), ``apply`` (record, bind, evict, charge;
    #: absent without an apply).
    timings: Mapping[str, float] = field(default_factory=dict)


#: Tells this process's round ids from another's started in the same second (a CronJob run and
#: a Deployment, say): two rounds with one id would share a ledger entry, and the second's
#: charges would be taken as made.
_PROCESS_TAG = secrets.token_hex(3)


def new_round_id(now: datetime | None = None) -> str:
    """A round id from the UTC time and this process's tag (``r-20261130-060838-1a2b3c``:
    sortable by time, unique across processes, valid as a Kubernetes name)."""
    t = now or datetime.now(UTC)
    return "r-" + t.strftime("%Y%m%d-%H%M%S") + "-" + _PROCESS_TAG


def run_once(
    api: Any, config: ClusterConfig | None = None, options: RoundOptions | None = None
) -> RoundOutcome:
    """Clear one round on the cluster behind ``api`` (a ``kubernetes.client.ApiClient``) as
    ``options`` say (default: :class:`RoundOptions`'s defaults).

    With ``options.lease`` = (namespace, name, holder) the round writes only if this run holds
    the Lease (one writer at a time) and gives it up when the round is applied; otherwise it
    plans and reports ``leader=False``. With ``options.record_namespace`` every applied round
    that binds, evicts or charges is first recorded there as an AllocationRound in phase
    Applying with its plan, and marked Applied at the end (a round of events only is not
    recorded); a run first completes the rounds an earlier run left Applying (idempotent
    writes: nothing is bound or charged twice), before reading the cluster for its own.
    ``apply_workers`` API calls of an apply are in flight at once (see
    :func:`allocator.cluster.api.apply_plan`); ``options.solve`` is the solve (its ``threads``
    compute the critical payments; see :func:`allocator.solvers.solve`). After a recorded round,
    Applied rounds beyond the newest ``keep_rounds`` are deleted (0: keep them all). Bindings
    into the room of evicted pods wait up to ``eviction_wait`` seconds for them to be gone (see
    :func:`allocator.cluster.api.apply_plan`). After an applied round, every agent (a Wallet
    labelled ``gpualloc.io/agent``) gets the round's view in its own cluster (see
    :mod:`allocator.cluster.publish`) through ``agent_clusters`` (made for this round when
    None); an agent that cannot be reached is reported in ``published``, never raised.
    """
    opts = options if options is not None else RoundOptions()
    if not isinstance(opts, RoundOptions):
        raise ProblemError("options", f"must be a RoundOptions, got {type(opts).__name__}")
    cfg = config or ClusterConfig()
    writes = not opts.dry_run
    leader = True
    if opts.lease is not None and writes:
        leader = acquire_lease(api, *opts.lease, duration_s=opts.lease_seconds)
    repaired = _complete_unfinished(api, opts) if leader and writes else ()
    t0 = time.perf_counter()
    nodes, pods, wallets = fetch(api, cfg)
    now = datetime.now(UTC)
    settled: list[Notice] = []
    if cfg.mig_planning and leader and writes:
        nodes, settled = _settle_layouts(api, nodes, now)
    snap = snapshot(nodes, pods, wallets, cfg, round_id=opts.round_id or new_round_id(), now=now)
    if opts.dump_snapshot is not None:
        text = json.dumps(problem_to_dict(snap.problem), indent=2) + "\n"
        Path(opts.dump_snapshot).write_text(text)
    timings = {"read": (time.perf_counter() - t0) * 1000.0}
    result = solve(snap.problem, params=opts.solve)
    timings["solve"] = float(result.stats.get("solve_ms", 0.0))
    timings["payments"] = float(result.stats.get("payments_ms", 0.0)) + (
        result.audit.time_ms if result.audit is not None else 0.0
    )
    applied, held = to_instances(result, snap.mig_nodes)
    changes = layout_changes(snap.mig_nodes, result.layouts, now)
    plan = plan_round(snap, applied)
    notices = settled + _held_notices(snap, held, changes)
    if notices:
        plan = replace(plan, notices=plan.notices + tuple(notices))
    report = published = None
    if leader and writes:
        for change in changes:  # the MIG manager's configuration first, then the label
            add_mig_configs(
                api, cfg.mig_config_namespace, cfg.mig_config_map, {change.config: change.entries}
            )
            patch_node_metadata(api, change.patch)
        report = _apply(api, plan, result, opts, snap, timings)
        if snap.agent_wallets:
            published = _publish(api, snap, result, plan, opts)
    return RoundOutcome(
        snap,
        result,
        plan,
        report,
        leader,
        repaired,
        published=published,
        layout_changes=changes,
        timings=timings,
    )


def _settle_layouts(
    api: Any, nodes: list[Mapping[str, Any]], now: datetime
) -> tuple[list[Mapping[str, Any]], list[Notice]]:
    """End the pending MIG layout changes the MIG manager is done with (see
    :func:`allocator.cluster.mig.settle`): patch those nodes and read them as patched."""
    out: list[Mapping[str, Any]] = []
    notices: list[Notice] = []
    for node in nodes:
        patch = settle(node, now)
        if patch is None:
            out.append(node)
            continue
        patch_node_metadata(api, patch)
        meta = dict(node.get("metadata") or {})
        ann = {**(meta.get("annotations") or {}), **patch.annotations}
        meta["annotations"] = {k: v for k, v in ann.items() if v is not None}
        out.append({**node, "metadata": meta})
        if patch.event is not None:
            reason, message, warning = patch.event
            notices.append(Notice(patch.node, reason, message, warning, "Node"))
    return out, notices


def _held_notices(
    snap: Snapshot, held: tuple[str, ...], changes: tuple[LayoutChange, ...]
) -> list[Notice]:
    """An event per pod won on a node being re-carved (it is bound once the new instances are
    advertised), and one per node asked to change."""
    out = [
        Notice(
            pod,
            "WaitingForMigLayout",
            f"round {snap.problem.round_id}: won instances of a MIG layout being applied; "
            "bound once the node advertises them",
            uid=snap.pod_uids.get(pod),
        )
        for bid in held
        for pod in snap.pods_of_bid.get(bid, ())
    ]
    for change in changes:
        if change.patch.event is not None:
            reason, message, warning = change.patch.event
            out.append(Notice(change.node, reason, message, warning, "Node"))
    return out


def _complete_unfinished(api: Any, opts: RoundOptions) -> tuple[str, ...]:
    """Apply (again) the rounds an earlier run left recorded as Applying; their ids."""
    if opts.record_namespace is None:
        return ()
    repaired = []
    for old in unfinished_rounds(api, opts.record_namespace):
        repair = apply_plan(api, old, opts.apply_workers, opts.eviction_wait)
        finish_round(api, opts.record_namespace, old.round_id, repair)
        repaired.append(old.round_id)
    return tuple(repaired)


def round_figures(snap: Snapshot, result: Result, timings: Mapping[str, float]) -> dict[str, Any]:
    """What an AllocationRound's status keeps of the round besides its plan (as the CRD spells
    it): the solver that decided, bids, clearing prices and utilisation per model, milliseconds
    per phase, and the payment audit where there was one."""
    out: dict[str, Any] = {
        "solverUsed": result.solver,
        "bids": len(snap.problem.bids),
        "clearingPrices": dict(result.clearing_prices),
        "utilisation": dict(result.utilisation),
        "timing": {f"{phase}Ms": round(ms, 3) for phase, ms in timings.items()},
    }
    if result.audit is not None:
        out["audit"] = camel_keys(audit_to_dict(result.audit))
    return out


def _apply(
    api: Any,
    plan: Plan,
    result: Result,
    opts: RoundOptions,
    snap: Snapshot,
    timings: dict[str, float],
) -> ApplyReport:
    """Record (where asked), apply and mark applied the round's plan; prune the ledger; give
    up the Lease. Sets ``timings["apply"]`` (record and apply, as the record keeps it)."""
    t0 = time.perf_counter()
    # A round that binds, evicts and charges nothing has nothing to complete after a crash:
    # no record (a Deployment would otherwise leave one per interval).
    record_in = None if plan.only_events else opts.record_namespace
    if record_in is not None:
        record_round(
            api,
            record_in,
            plan,
            solver=opts.solve.solver,
            payments=result.payment_rule,
            time_limit=opts.solve.time_limit,
            welfare=result.welfare,
            revenue=result.revenue,
            figures=round_figures(snap, result, timings),
        )
    report = apply_plan(api, plan, opts.apply_workers, opts.eviction_wait)
    timings["apply"] = (time.perf_counter() - t0) * 1000.0
    if record_in is not None:
        finish_round(api, record_in, plan.round_id, report, apply_ms=timings["apply"])
        if opts.keep_rounds > 0:
            prune_rounds(api, record_in, opts.keep_rounds)
    if opts.lease is not None:
        release_lease(api, *opts.lease)  # the next run need not wait for it to expire
    return report


def _publish(
    api: Any, snap: Snapshot, result: Result, plan: Plan, opts: RoundOptions
) -> PublishReport:
    """Tell every agent the round's view, through the loop's clients or this round's own."""
    clusters = opts.agent_clusters or AgentClusters(api)
    try:
        return publish_round(clusters, snap, result, plan)
    finally:
        if opts.agent_clusters is None:
            clusters.close()


@dataclass(frozen=True)
class RoundsSummary:
    """What ``run_rounds`` did: rounds started, and how many of them failed."""

    rounds: int
    failed: int


def run_rounds(
    api: Any,
    config: ClusterConfig | None = None,
    options: RoundOptions | None = None,
    *,
    interval: float,
    max_rounds: int | None = None,
    stop: threading.Event | None = None,
    on_round: Callable[[RoundOutcome], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_failed: Callable[[str], None] | None = None,
) -> RoundsSummary:
    """Clear a round every ``interval`` seconds (start to start) until ``stop`` is set or
    ``max_rounds`` rounds have run; each is :func:`run_once` with ``options`` (which must leave
    ``round_id`` unset: every round gets a fresh, unique one).

    A round that raises (the API server unreachable, a solver error, ...) is logged with its
    traceback and the loop goes on: the next round reads the cluster afresh, and a round left
    recorded as Applying is completed by the next one that holds the Lease. ``stop`` is checked
    between rounds only, so a round in progress always finishes (a signal handler may set it:
    nothing here waits on it while holding its lock). ``on_round`` sees every completed round
    (its ``trigger``: ``start``, then ``interval``), ``on_failed`` the id of every failed one.
    """
    opts = _check_loop(interval, max_rounds, options, "run_rounds")
    stop = stop or threading.Event()
    rounds = failed = 0
    previous_id = ""
    while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
        started = clock()
        round_id = _next_round_id(previous_id)
        previous_id = round_id
        rounds += 1
        trigger = RoundTrigger("start" if rounds == 1 else "interval")
        one = opts.replace(round_id=round_id)
        if not _clear_round(api, config, one, trigger, on_round, on_failed):
            failed += 1
        if max_rounds is not None and rounds >= max_rounds:
            break
        deadline = started + interval
        while not stop.is_set() and (left := deadline - clock()) > 0:
            time.sleep(min(left, 0.2))  # short naps: a stop is seen within 0.2 s
    return RoundsSummary(rounds, failed)


def watch_rounds(
    api: Any,
    config: ClusterConfig | None = None,
    options: RoundOptions | None = None,
    *,
    interval: float,
    debounce: float = DEBOUNCE,
    max_delay: float = MAX_DELAY,
    max_rounds: int | None = None,
    stop: threading.Event | None = None,
    on_round: Callable[[RoundOutcome], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sync_timeout: float = SYNC_TIMEOUT,
    watch_seconds: int = 1,
    on_failed: Callable[[str], None] | None = None,
) -> RoundsSummary:
    """Clear a round whenever the bids change, and at least every ``interval`` seconds (start
    to start), until ``stop`` is set or ``max_rounds`` rounds have run; each round is one
    :func:`run_once` with ``options`` (not ``round_id``): the same Lease, the same crash-safe
    ledger.

    Watch streams (pods, Wallets, nodes; see :mod:`allocator.cluster.watch`) report the changes
    that can move a round's answer; a round starts once they have paused for ``debounce``
    seconds, at most ``max_delay`` seconds after the first of them, so that a burst becomes one
    round. What a round writes itself (bindings, the deletion-in-progress of the pods it evicts,
    wallet charges, events, AllocationRounds) starts no round; an evicted pod that is then gone
    is one change, so a round's own writes cause at most one follow-up round. A change that
    comes while a round runs is answered by the next one. The first round starts once every
    stream has listed (at most ``sync_timeout`` seconds); a watch that fails (the API server
    restarting) is retried with backoff while rounds go on at the ceiling. ``on_round`` sees
    every completed round with its ``trigger`` (why it started, which change first, how many
    were coalesced), which is also logged. Failing rounds are logged (their ids given to
    ``on_failed``) and the loop goes on, as in :func:`run_rounds`; ``stop`` is seen within
    0.2 s between rounds, and the watch threads end within about ``watch_seconds`` after it.
    """
    opts = _check_loop(interval, max_rounds, options, "watch_rounds")
    _check_seconds("debounce", debounce, zero=True)
    _check_seconds("max_delay", max_delay, zero=False)
    if max_delay < debounce:
        raise ValueError(f"max_delay: must be >= debounce ({debounce!r}), got {max_delay!r}")
    _check_seconds("sync_timeout", sync_timeout, zero=True)
    cfg = config or ClusterConfig()
    stop = stop or threading.Event()
    timer = Debouncer(debounce=debounce, max_delay=max_delay, interval=interval, clock=clock)
    watch = ClusterWatch(api, cfg, timer.notify, watch_seconds=watch_seconds)
    watch.start()
    try:
        if not watch.wait_synced(sync_timeout, stop) and not stop.is_set():
            log.warning(
                "watches not listed after %g s; rounds start anyway, at least every %g s",
                sync_timeout,
                interval,
            )
        return _watched_rounds(api, cfg, opts, timer, stop, max_rounds, on_round, on_failed)
    finally:
        if not watch.close():
            log.warning("a watch thread did not end in time (it is a daemon thread)")


def _watched_rounds(
    api: Any,
    cfg: ClusterConfig,
    opts: RoundOptions,
    timer: Debouncer,
    stop: threading.Event,
    max_rounds: int | None,
    on_round: Callable[[RoundOutcome], None] | None,
    on_failed: Callable[[str], None] | None = None,
) -> RoundsSummary:
    """The rounds of :func:`watch_rounds`: one each time ``timer`` fires, until ``stop``."""
    rounds = failed = 0
    previous_id = ""
    while (trigger := timer.wait(stop)) is not None:
        round_id = _next_round_id(previous_id)
        previous_id = round_id
        rounds += 1
        log.info("round %s started by %s", round_id, trigger)
        one = opts.replace(round_id=round_id)
        if not _clear_round(api, cfg, one, trigger, on_round, on_failed):
            failed += 1
        if max_rounds is not None and rounds >= max_rounds:
            break
    return RoundsSummary(rounds, failed)


def _check_seconds(name: str, value: Any, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name}: must be {'>=' if zero else '>'} 0 seconds, got {value!r}")


def _check_loop(
    interval: Any, max_rounds: Any, options: RoundOptions | None, caller: str
) -> RoundOptions:
    """Validate the arguments both loops share (ValueError naming the field); the options."""
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError(f"interval: must be a number of seconds, got {interval!r}")
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"interval: must be > 0 seconds, got {interval!r}")
    if max_rounds is not None and (
        isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1
    ):
        raise ValueError(f"max_rounds: must be an integer >= 1, got {max_rounds!r}")
    opts = options if options is not None else RoundOptions()
    if not isinstance(opts, RoundOptions):
        raise ValueError(f"options: must be a RoundOptions, got {type(opts).__name__}")
    if opts.round_id is not None:
        raise ValueError(f"round_id: every round of {caller} gets its own id")
    return opts


def _clear_round(
    api: Any,
    config: ClusterConfig | None,
    options: RoundOptions,
    trigger: RoundTrigger,
    on_round: Callable[[RoundOutcome], None] | None,
    on_failed: Callable[[str], None] | None = None,
) -> bool:
    """One round of a loop: :func:`run_once`, its outcome (with ``trigger``) to ``on_round``;
    False if it raised (logged with its traceback: the loop outlives it; its round id to
    ``on_failed``)."""
    try:
        outcome = run_once(api, config, options)
    except Exception:  # any failure of one round; the loop outlives it
        log.exception("round %s failed; the next round starts afresh", options.round_id)
        if on_failed is not None:
            on_failed(str(options.round_id))
        return False
    if on_round is not None:
        on_round(replace(outcome, trigger=trigger))
    return True


def _next_round_id(previous: str) -> str:
    """A fresh round id that sorts after ``previous`` (more rounds within one second of the
    clock get ``-002``, ``-003``, ... suffixes, so the ids stay unique and in order)."""
    base = new_round_id()
    if not previous.startswith(base):
        return base
    head, _, tail = previous[len(base) :].partition("-")
    n = int(tail) if not head and tail.isdigit() else 1
    return f"{base}-{n + 1:03d}"
