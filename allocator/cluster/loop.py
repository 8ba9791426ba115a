"""One round against a live cluster: read -> solve -> plan -> apply (the CronJob's whole body).

``run_once`` fetches nodes, pods and wallets, builds the Problem, solves it, turns the Result into
a Plan and applies it (unless ``dry_run``). ``dump_snapshot`` writes the Problem as the JSON that
``gpu-allocator solve`` reads, so any round can be replayed offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allocator.cluster.api import (
    ApplyReport,
    acquire_lease,
    apply_plan,
    fetch,
    finish_round,
    record_round,
    release_lease,
    unfinished_rounds,
)
from allocator.cluster.config import ClusterConfig
from allocator.cluster.plan import Plan, plan_round
from allocator.cluster.read import Snapshot, snapshot
from allocator.model import Result, problem_to_dict
from allocator.solvers import solve

__all__ = ["RoundOutcome", "new_round_id", "run_once"]


@dataclass(frozen=True)
class RoundOutcome:
    """What a round read, decided and (unless a dry run) wrote."""

    snapshot: Snapshot
    result: Result
    plan: Plan
    report: ApplyReport | None
    leader: bool = True
    repaired: tuple[str, ...] = ()


def new_round_id(now: datetime | None = None) -> str:
    """A round id from the UTC time (sortable, valid as a Kubernetes name)."""
    t = now or datetime.now(UTC)
    return "r-" + t.strftime("%Y%m%d-%H%M%S")


def run_once(
    api: Any,
    config: ClusterConfig | None = None,
    *,
    solver: str = "auto",
    payments: str = "critical",
    time_limit: float = 10.0,
    round_id: str | None = None,
    dry_run: bool = False,
    dump_snapshot: str | Path | None = None,
    lease: tuple[str, str, str] | None = None,
    lease_seconds: int = 300,
    record_namespace: str | None = None,
) -> RoundOutcome:
    """Clear one round on the cluster behind ``api`` (a ``kubernetes.client.ApiClient``).

    With ``lease`` = (namespace, name, holder) the round writes only if this run holds the Lease
    (one writer at a time) and gives it up when the round is applied; otherwise it plans and
    reports ``leader=False``. With
    ``record_namespace`` every applied round is first recorded there as an AllocationRound in
    phase Applying with its plan, and marked Applied at the end; a run first completes the
    rounds an earlier run left Applying (idempotent writes: nothing is bound or charged twice),
    before reading the cluster for its own.
    """
    cfg = config or ClusterConfig()
    leader = True
    if lease is not None and not dry_run:
        leader = acquire_lease(api, *lease, duration_s=lease_seconds)
    repaired: list[str] = []
    if record_namespace is not None and leader and not dry_run:
        for old in unfinished_rounds(api, record_namespace):
            finish_round(api, record_namespace, old.round_id, apply_plan(api, old))
            repaired.append(old.round_id)
    nodes, pods, wallets = fetch(api, cfg)
    snap = snapshot(nodes, pods, wallets, cfg, round_id=round_id or new_round_id())
    if dump_snapshot is not None:
        Path(dump_snapshot).write_text(json.dumps(problem_to_dict(snap.problem), indent=2) + "\n")
    result = solve(snap.problem, solver=solver, payments=payments, time_limit=time_limit)
    plan = plan_round(snap, result)
    report = None
    if leader and not dry_run:
        if record_namespace is not None:
            record_round(
                api,
                record_namespace,
                plan,
                solver=solver,
                payments=payments,
                time_limit=time_limit,
                welfare=result.welfare,
                revenue=result.revenue,
            )
        report = apply_plan(api, plan)
        if record_namespace is not None:
            finish_round(api, record_namespace, plan.round_id, report)
        if lease is not None:
            release_lease(api, *lease)  # the next run need not wait for it to expire
    return RoundOutcome(snap, result, plan, report, leader, tuple(repaired))
