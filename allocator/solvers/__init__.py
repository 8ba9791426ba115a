"""Solvers behind one call, :func:`solve`.

``greedy`` and ``local`` run in the C++ core (``allocator._core`` via :mod:`.native`);
``cpsat`` is the exact model (:mod:`.cpsat`, the only module that imports OR-Tools); ``auto``
runs ``local`` and, when the round is small enough, CP-SAT too, and keeps the better.
Payments and loss reasons are computed the same way whichever solver allocated.
"""

from __future__ import annotations

import time
from typing import Any

from allocator.model import PAYMENT_RULES, SOLVERS, Problem, ProblemError, Result
from allocator.solvers.arguments import check_seed, check_time_limit
from allocator.solvers.assemble import Allocation, build_result, welfare

__all__ = ["AUTO_CPSAT_MAX_BIDS", "Allocation", "solve"]

#: ``auto`` also runs CP-SAT when the round has at most this many bids ...
AUTO_CPSAT_MAX_BIDS = 300
#: ... and at most this many GPUs.
AUTO_CPSAT_MAX_GPUS = 128


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ProblemError("threads", f"must be an integer >= 0 (0: one per CPU); got {threads!r}")


def _check_args(solver: str, payments: str, time_limit: float, seed: int) -> None:
    if solver not in SOLVERS:
        raise ProblemError("solver", f"must be one of {', '.join(SOLVERS)}; got {solver!r}")
    if payments not in PAYMENT_RULES:
        raise ProblemError(
            "payments", f"must be one of {', '.join(PAYMENT_RULES)}; got {payments!r}"
        )
    check_time_limit(time_limit)
    check_seed(seed)
    if payments == "vcg" and solver not in ("cpsat", "auto"):
        raise ProblemError("payments", "vcg needs the exact solver: use solver='cpsat'")


def solve(
    problem: Problem,
    solver: str = "auto",
    payments: str = "critical",
    time_limit: float = 10.0,
    seed: int = 0,
    threads: int = 1,
) -> Result:
    """Clear one round.

    Parameters
    ----------
    problem
        The validated round.
    solver
        ``greedy``, ``local``, ``cpsat`` or ``auto``.
    payments
        ``critical`` (default), ``first-price`` or ``vcg`` (exact solver only).
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
    _check_args(solver, payments, time_limit, seed)
    _check_threads(threads)
    from allocator.solvers.native import NativeEngine

    t0 = time.perf_counter()
    engine = NativeEngine(problem)
    stats: dict[str, Any] = {}
    status = "feasible"
    chosen = solver
    start = engine.greedy()
    alloc = start
    if solver in ("local", "auto"):
        alloc = engine.local(start, time_limit=time_limit, seed=seed)
    if solver == "cpsat" or (solver == "auto" and _small(problem)) or payments == "vcg":
        from allocator.solvers.cpsat import solve_cpsat

        exact = solve_cpsat(problem, warm_start=alloc, time_limit=time_limit, seed=seed)
        status = str(exact.stats.get("status", "feasible")).lower()
        if solver == "cpsat" or welfare(problem, exact) >= welfare(problem, alloc) - 1e-9:
            chosen = "cpsat" if solver == "cpsat" else "auto:cpsat"
            alloc = exact
        else:
            chosen = "auto:local"
            status = "feasible"
    elif solver == "auto":
        chosen = "auto:local"
    stats["solve_ms"] = (time.perf_counter() - t0) * 1000.0

    t1 = time.perf_counter()
    if payments == "first-price":
        pay = {b: problem.bids[b].alternatives[a].value for b, (a, _) in alloc.winners.items()}
    elif payments == "critical":
        pay = engine.critical_payments(alloc, threads=threads)
    else:
        from allocator.solvers.cpsat import vcg_payments

        pay = vcg_payments(problem, alloc, time_limit=time_limit, seed=seed)
    stats["payments_ms"] = (time.perf_counter() - t1) * 1000.0
    reasons = engine.explain(alloc)
    stats["solver_used"] = chosen
    return build_result(
        problem,
        alloc,
        solver=chosen,
        payment_rule=payments,
        payments=pay,
        reasons=reasons,
        status=status,
        stats=stats,
    )


def _small(problem: Problem) -> bool:
    return len(problem.bids) <= AUTO_CPSAT_MAX_BIDS and problem.gpu_count <= AUTO_CPSAT_MAX_GPUS
