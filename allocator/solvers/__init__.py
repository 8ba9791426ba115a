"""Solvers behind one call, :func:`solve`.

``greedy`` and ``local`` run in the C++ core (``allocator._core`` via :mod:`.native`);
``cpsat`` is the exact model (:mod:`.cpsat`, the only module that imports OR-Tools); ``auto``
runs ``local`` and, when the round is small enough, CP-SAT too, and keeps the better.
Payments and loss reasons are computed the same way whichever solver allocated.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import TYPE_CHECKING, Any

from allocator.model import PaymentAudit, Problem, ProblemError, Result
from allocator.solvers.assemble import Allocation, build_result, welfare
from allocator.solvers.layouts import has_layouts, plan_layouts
from allocator.solvers.params import SolveParams

if TYPE_CHECKING:
    from allocator.solvers.native import NativeEngine

__all__ = ["Allocation", "SolveParams", "allocate", "solve"]


def solve(
    problem: Problem,
    solver: str | None = None,
    payments: str | None = None,
    time_limit: float | None = None,
    seed: int | None = None,
    threads: int | None = None,
    *,
    params: SolveParams | None = None,
) -> Result:
    """Clear one round.

    Parameters
    ----------
    problem
        The validated round.
    params
        Every option of the solve (:class:`~allocator.solvers.params.SolveParams`; default:
        its defaults). The keyword shortcuts below override single fields of it.
    solver
        ``greedy``, ``local``, ``cpsat`` or ``auto``.
    payments
        ``auto`` (default: ``critical`` up to ``params.auto_critical_max_bids`` bids, ``los``
        above), ``critical``, ``los`` (what the first bid a winner blocked in the greedy run
        was worth at its size: one pass, for large rounds; docs/concepts.md), ``first-price`` or
        ``vcg`` (exact solver only). Where ``los`` prices, a sample of winners
        (``params.audit_sample``) is also priced exactly, within ``params.audit_time`` seconds,
        and the deviation reported in ``Result.audit``.
    time_limit
        Seconds for local search and CP-SAT (each); greedy ignores it.
    seed
        Seed of the randomised parts (local search, CP-SAT workers).
    threads
        Threads for critical payments (each winner's replay is independent; 0: one per CPU).
        The payments are the same for every count; the solvers themselves stay single-threaded.

    Raises
    ------
    ProblemError
        If an argument is invalid (the message names it).
    """
    given = {
        "solver": solver,
        "payments": payments,
        "time_limit": time_limit,
        "seed": seed,
        "threads": threads,
    }
    base = params if params is not None else SolveParams()
    if not isinstance(base, SolveParams):
        raise ProblemError("params", f"must be a SolveParams, got {type(base).__name__}")
    p = base.replace(**{k: v for k, v in given.items() if v is not None})
    from allocator.solvers.native import NativeEngine

    t0 = time.perf_counter()
    # Each problem solved (the planner pins GPUs and solves again), kept alive with its engine
    # so that ids stay unique.
    runs: dict[int, tuple[Problem, NativeEngine, str, str]] = {}

    def run(pb: Problem) -> Allocation:
        engine = NativeEngine(pb, alpha=p.alpha, packing=p.packing)
        alloc, chosen, status = _allocate(pb, engine, p)
        runs[id(pb)] = (pb, engine, chosen, status)
        return alloc

    plan = plan_layouts(problem, run) if has_layouts(problem) else None
    solved = plan.problem if plan is not None else problem
    alloc = plan.allocation if plan is not None else run(problem)
    _, engine, chosen, status = runs[id(solved)]
    stats: dict[str, Any] = {"solve_ms": (time.perf_counter() - t0) * 1000.0}
    t1 = time.perf_counter()
    rule = payment_rule(solved, p)
    pay = _payments(solved, engine, alloc, p, rule)
    stats["payments_ms"] = (time.perf_counter() - t1) * 1000.0
    audit = _audit(engine, alloc, pay, p, rule) if rule == "los" else None
    reasons = engine.explain(alloc)
    stats["solver_used"] = chosen
    if plan is not None:
        stats["recarved"] = len(plan.recarved)
        stats["layout_solves"] = plan.solves
    result = build_result(
        solved,
        alloc,
        solver=chosen,
        payment_rule=rule,
        payments=pay,
        reasons=reasons,
        status=status,
        stats=stats,
    )
    if audit is not None:
        result = dataclasses.replace(result, audit=audit)
    if plan is None:
        return result
    # The problem as given (GPUs pinned by the planner were recarvable there) and the
    # re-carvings' cost in welfare.
    return dataclasses.replace(
        result, welfare=plan.net_welfare, layouts=plan.layouts, round_id=problem.round_id
    )


def allocate(problem: Problem, params: SolveParams | None = None) -> Allocation:
    """The allocation alone: what :func:`solve` allocates with ``params``, without payments,
    loss reasons or a :class:`Result` (bids and incumbents by index into ``problem``).

    For callers that clear many rounds and only need who gets what, where assembling a Result
    would cost more than the solve (the simulator's baselines: greedy, ``alpha=0``).
    """
    from allocator.solvers.native import NativeEngine

    p = params if params is not None else SolveParams()
    if not isinstance(p, SolveParams):
        raise ProblemError("params", f"must be a SolveParams, got {type(p).__name__}")

    def run(pb: Problem) -> Allocation:
        return _allocate(pb, NativeEngine(pb, alpha=p.alpha, packing=p.packing), p)[0]

    if has_layouts(problem):
        plan = plan_layouts(problem, run)
        return dataclasses.replace(
            plan.allocation,
            stats={
                **plan.allocation.stats,
                "layouts": plan.layouts,
                "recarved": len(plan.recarved),
            },
        )
    return run(problem)


def _allocate(
    problem: Problem, engine: NativeEngine, p: SolveParams
) -> tuple[Allocation, str, str]:
    """The allocation, the solver that found it (``auto:local`` ...) and its status."""
    status = "feasible"
    chosen = p.solver
    alloc = engine.greedy()
    if p.solver in ("local", "auto"):
        alloc = engine.local(
            alloc,
            time_limit=p.time_limit,
            seed=p.seed,
            max_iterations=-1 if p.local_iterations is None else p.local_iterations,
            patience=p.local_patience,
        )
    if p.solver == "cpsat" or (p.solver == "auto" and _small(problem, p)) or p.payments == "vcg":
        from allocator.solvers.cpsat import solve_cpsat

        exact = solve_cpsat(
            problem,
            warm_start=alloc,
            time_limit=p.time_limit,
            seed=p.seed,
            work_limit=p.cpsat_work,
        )
        status = str(exact.stats.get("status", "feasible")).lower()
        if p.solver == "cpsat" or welfare(problem, exact) >= welfare(problem, alloc) - 1e-9:
            chosen = "cpsat" if p.solver == "cpsat" else "auto:cpsat"
            alloc = exact
        else:
            chosen = "auto:local"
            status = "feasible"
    elif p.solver == "auto":
        chosen = "auto:local"
    return alloc, chosen, status


def payment_rule(problem: Problem, p: SolveParams) -> str:
    """The rule that prices ``problem`` under ``p``: ``p.payments``, or for ``auto`` exact
    ``critical`` up to ``p.auto_critical_max_bids`` bids and ``los`` above."""
    if p.payments != "auto":
        return p.payments
    return "critical" if len(problem.bids) <= p.auto_critical_max_bids else "los"


def _payments(
    problem: Problem, engine: NativeEngine, alloc: Allocation, p: SolveParams, rule: str
) -> dict[int, float]:
    if rule == "first-price":
        return {b: problem.bids[b].alternatives[a].value for b, (a, _) in alloc.winners.items()}
    if rule == "critical":
        return engine.critical_payments(alloc, threads=p.threads)
    if rule == "los":
        return engine.los_payments(alloc)
    from allocator.solvers.cpsat import vcg_payments

    return vcg_payments(
        problem, alloc, time_limit=p.time_limit, seed=p.seed, work_limit=p.cpsat_work
    )


def _audit(
    engine: NativeEngine, alloc: Allocation, pay: dict[int, float], p: SolveParams, rule: str
) -> PaymentAudit | None:
    """Exact critical payments of a sample of the winners (drawn with ``p.seed``), replayed
    within ``p.audit_time`` seconds, against ``pay``. None when there is nothing to audit."""
    winners = sorted(alloc.winners)
    if p.audit_sample == 0 or not winners:
        return None
    sample = random.Random(p.seed).sample(winners, min(p.audit_sample, len(winners)))
    t0 = time.perf_counter()
    exact = engine.critical_payments_of(alloc, sample, p.audit_time)
    ms = (time.perf_counter() - t0) * 1000.0
    errors, over, charged, truth = [], 0, 0.0, 0.0
    for b, x in exact.items():
        bid = engine.problem.bids[b].alternatives[alloc.winners[b][0]].value
        scale = bid if bid > 0 else 1.0
        errors.append(abs(pay[b] - x) / scale)
        over += pay[b] - x > 0.01 * scale
        charged += pay[b]
        truth += x
    return PaymentAudit(
        rule=rule,
        winners=len(winners),
        sampled=len(sample),
        replayed=len(exact),
        mean_err=sum(errors) / len(errors),
        max_err=max(errors),
        within_1pct=sum(e <= 0.01 for e in errors) / len(errors),
        overcharged=over,
        revenue_ratio=charged / truth if truth > 0 else (1.0 if charged == 0 else None),
        time_ms=ms,
    )


def _small(problem: Problem, p: SolveParams) -> bool:
    return len(problem.bids) <= p.auto_cpsat_max_bids and problem.gpu_count <= p.auto_cpsat_max_gpus
