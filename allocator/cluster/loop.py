"""Rounds against a live cluster: read -> solve -> plan -> apply.

``run_once`` (the CronJob's whole body) fetches nodes, pods and wallets, builds the Problem,
solves it, turns the Result into a Plan and applies it (unless ``dry_run``). ``dump_snapshot``
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allocator.cluster.api import (
    APPLY_WORKERS,
    EVICTION_WAIT,
    ApplyReport,
    acquire_lease,
    apply_plan,
    fetch,
    finish_round,
    prune_rounds,
    record_round,
    release_lease,
    unfinished_rounds,
)
from allocator.cluster.config import ClusterConfig
from allocator.cluster.plan import Plan, plan_round
from allocator.cluster.publish import AgentClusters, PublishReport, publish_round
from allocator.cluster.read import Snapshot, snapshot
from allocator.cluster.watch import ClusterWatch, Debouncer, RoundTrigger
from allocator.model import Result, problem_to_dict
from allocator.solvers import solve

__all__ = [
    "DEBOUNCE",
    "KEEP_ROUNDS",
    "MAX_DELAY",
    "RoundOutcome",
    "RoundsSummary",
    "new_round_id",
    "run_once",
    "run_rounds",
    "watch_rounds",
]

log = logging.getLogger(__name__)

#: Applied AllocationRounds kept in the lease's namespace (older ones are deleted; 0: all kept).
KEEP_ROUNDS = 200
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
    api: Any,
    config: ClusterConfig | None = None,
    *,
    solver: str = "auto",
    payments: str = "critical",
    time_limit: float = 10.0,
    threads: int = 1,
    round_id: str | None = None,
    dry_run: bool = False,
    dump_snapshot: str | Path | None = None,
    lease: tuple[str, str, str] | None = None,
    lease_seconds: int = 300,
    record_namespace: str | None = None,
    apply_workers: int = APPLY_WORKERS,
    keep_rounds: int = KEEP_ROUNDS,
    eviction_wait: float = EVICTION_WAIT,
    agent_clusters: AgentClusters | None = None,
) -> RoundOutcome:
    """Clear one round on the cluster behind ``api`` (a ``kubernetes.client.ApiClient``).

    With ``lease`` = (namespace, name, holder) the round writes only if this run holds the Lease
    (one writer at a time) and gives it up when the round is applied; otherwise it plans and
    reports ``leader=False``. With ``record_namespace`` every applied round that binds, evicts
    or charges is first recorded there as an AllocationRound in phase Applying with its plan,
    and marked Applied at the end (a round of events only is not recorded); a run first
    completes the rounds an earlier run left Applying (idempotent writes: nothing is bound or
    charged twice), before reading the cluster for its own. ``apply_workers`` API calls of an
    apply are in flight at once (see :func:`allocator.cluster.api.apply_plan`); ``threads``
    compute the critical payments (see :func:`allocator.solvers.solve`). After a recorded round,
    Applied rounds beyond the newest ``keep_rounds`` are deleted (0: keep them all). Bindings
    into the room of evicted pods wait up to ``eviction_wait`` seconds for them to be gone (see
    :func:`allocator.cluster.api.apply_plan`). After an applied round, every agent (a Wallet
    labelled ``gpualloc.io/agent``) gets the round's view in its own cluster (see
    :mod:`allocator.cluster.publish`) through ``agent_clusters`` (made for this round when
    None); an agent that cannot be reached is reported in ``published``, never raised.
    """
    cfg = config or ClusterConfig()
    leader = True
    if lease is not None and not dry_run:
        leader = acquire_lease(api, *lease, duration_s=lease_seconds)
    repaired: list[str] = []
    if record_namespace is not None and leader and not dry_run:
        for old in unfinished_rounds(api, record_namespace):
            repair = apply_plan(api, old, apply_workers, eviction_wait)
            finish_round(api, record_namespace, old.round_id, repair)
            repaired.append(old.round_id)
    nodes, pods, wallets = fetch(api, cfg)
    snap = snapshot(nodes, pods, wallets, cfg, round_id=round_id or new_round_id())
    if dump_snapshot is not None:
        Path(dump_snapshot).write_text(json.dumps(problem_to_dict(snap.problem), indent=2) + "\n")
    result = solve(
        snap.problem, solver=solver, payments=payments, time_limit=time_limit, threads=threads
    )
    plan = plan_round(snap, result)
    report = None
    if leader and not dry_run:
        # A round that binds, evicts and charges nothing has nothing to complete after a crash:
        # no record (a Deployment would otherwise leave one per interval).
        record_in = None if plan.only_events else record_namespace
        if record_in is not None:
            record_round(
                api,
                record_in,
                plan,
                solver=solver,
                payments=payments,
                time_limit=time_limit,
                welfare=result.welfare,
                revenue=result.revenue,
            )
        report = apply_plan(api, plan, apply_workers, eviction_wait)
        if record_in is not None:
            finish_round(api, record_in, plan.round_id, report)
            if keep_rounds > 0:
                prune_rounds(api, record_in, keep_rounds)
        if lease is not None:
            release_lease(api, *lease)  # the next run need not wait for it to expire
    published = None
    if leader and not dry_run and snap.agent_wallets:
        clusters = agent_clusters or AgentClusters(api)
        try:
            published = publish_round(clusters, snap, result, plan)
        finally:
            if agent_clusters is None:
                clusters.close()
    return RoundOutcome(snap, result, plan, report, leader, tuple(repaired), published=published)


@dataclass(frozen=True)
class RoundsSummary:
    """What ``run_rounds`` did: rounds started, and how many of them failed."""

    rounds: int
    failed: int


def run_rounds(
    api: Any,
    config: ClusterConfig | None = None,
    *,
    interval: float,
    max_rounds: int | None = None,
    stop: threading.Event | None = None,
    on_round: Callable[[RoundOutcome], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    **round_args: Any,
) -> RoundsSummary:
    """Clear a round every ``interval`` seconds (start to start) until ``stop`` is set or
    ``max_rounds`` rounds have run; ``round_args`` go to :func:`run_once` (not ``round_id``:
    every round gets a fresh, unique one).

    A round that raises (the API server unreachable, a solver error, ...) is logged with its
    traceback and the loop goes on: the next round reads the cluster afresh, and a round left
    recorded as Applying is completed by the next one that holds the Lease. ``stop`` is checked
    between rounds only, so a round in progress always finishes (a signal handler may set it:
    nothing here waits on it while holding its lock). ``on_round`` sees every completed round
    (its ``trigger``: ``start``, then ``interval``).
    """
    _check_loop(interval, max_rounds, round_args, "run_rounds")
    stop = stop or threading.Event()
    rounds = failed = 0
    previous_id = ""
    while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
        started = clock()
        round_id = _next_round_id(previous_id)
        previous_id = round_id
        rounds += 1
        trigger = RoundTrigger("start" if rounds == 1 else "interval")
        if not _clear_round(api, config, round_id, trigger, on_round, round_args):
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
    **round_args: Any,
) -> RoundsSummary:
    """Clear a round whenever the bids change, and at least every ``interval`` seconds (start
    to start), until ``stop`` is set or ``max_rounds`` rounds have run; ``round_args`` go to
    :func:`run_once` (not ``round_id``), so every round is one ``run_once``: the same Lease, the
    same crash-safe ledger.

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
    were coalesced), which is also logged. Failing rounds are logged and the loop goes on, as
    in :func:`run_rounds`; ``stop`` is seen within 0.2 s between rounds, and the watch threads
    end within about ``watch_seconds`` after it.
    """
    _check_loop(interval, max_rounds, round_args, "watch_rounds")
    _check_seconds("debounce", debounce, zero=True)
    _check_seconds("max_delay", max_delay, zero=False)
    if max_delay < debounce:
        raise ValueError(f"max_delay: must be >= debounce ({debounce!r}), got {max_delay!r}")
    _check_seconds("sync_timeout", sync_timeout, zero=True)
    cfg = config or ClusterConfig()
    stop = stop or threading.Event()
    timer = Debouncer(debounce=debounce, max_delay=max_delay, interval=interval, clock=clock)
    watch = ClusterWatch(api, cfg, timer.notify, watch_seconds=watch_seconds)
    rounds = failed = 0
    previous_id = ""
    watch.start()
    try:
        if not watch.wait_synced(sync_timeout, stop) and not stop.is_set():
            log.warning(
                "watches not listed after %g s; rounds start anyway, at least every %g s",
                sync_timeout,
                interval,
            )
        while (trigger := timer.wait(stop)) is not None:
            round_id = _next_round_id(previous_id)
            previous_id = round_id
            rounds += 1
            log.info("round %s started by %s", round_id, trigger)
            if not _clear_round(api, cfg, round_id, trigger, on_round, round_args):
                failed += 1
            if max_rounds is not None and rounds >= max_rounds:
                break
    finally:
        if not watch.close():
            log.warning("a watch thread did not end in time (it is a daemon thread)")
    return RoundsSummary(rounds, failed)


def _check_seconds(name: str, value: Any, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name}: must be {'>=' if zero else '>'} 0 seconds, got {value!r}")


def _check_loop(interval: Any, max_rounds: Any, round_args: dict[str, Any], caller: str) -> None:
    """Validate the arguments both loops share (ValueError naming the field)."""
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError(f"interval: must be a number of seconds, got {interval!r}")
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"interval: must be > 0 seconds, got {interval!r}")
    if max_rounds is not None and (
        isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1
    ):
        raise ValueError(f"max_rounds: must be an integer >= 1, got {max_rounds!r}")
    if "round_id" in round_args:
        raise ValueError(f"round_id: every round of {caller} gets its own id")


def _clear_round(
    api: Any,
    config: ClusterConfig | None,
    round_id: str,
    trigger: RoundTrigger,
    on_round: Callable[[RoundOutcome], None] | None,
    round_args: dict[str, Any],
) -> bool:
    """One round of a loop: :func:`run_once`, its outcome (with ``trigger``) to ``on_round``;
    False if it raised (logged with its traceback: the loop outlives it)."""
    try:
        outcome = run_once(api, config, round_id=round_id, **round_args)
    except Exception:  # any failure of one round; the loop outlives it
        log.exception("round %s failed; the next round starts afresh", round_id)
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
