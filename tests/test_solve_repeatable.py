"""Work limits make a solve repeatable: the same SolveParams give the same Result, also when
the limits bind (CP-SAT stopped before its proof, local search before it stalls)."""

from __future__ import annotations

from typing import Any

import pytest

from allocator import solve
from allocator.instances import random_problem
from allocator.model import Result, result_to_dict
from allocator.solvers import SolveParams


def _answer(result: Result) -> dict[str, Any]:
    """Everything of a result but its timings."""
    data = result_to_dict(result)
    stats = data.pop("stats")
    data["stats"] = {k: v for k, v in stats.items() if not k.endswith(("_ms", "_seconds"))}
    return data


@pytest.mark.parametrize(
    "params",
    [
        SolveParams(solver="local", local_iterations=300, time_limit=60.0, seed=3),
        SolveParams(solver="auto", local_iterations=100, cpsat_work=0.05, time_limit=60.0, seed=5),
        SolveParams(solver="cpsat", cpsat_work=0.05, time_limit=60.0, payments="first-price"),
    ],
    ids=["local", "auto", "cpsat"],
)
def test_work_limited_solves_give_identical_results_twice(params: SolveParams) -> None:
    problem = random_problem(1, gpus=32, bids=100, wallets=6, incumbents=6)
    first, second = solve(problem, params=params), solve(problem, params=params)
    assert _answer(first) == _answer(second)
    if params.solver == "local":
        assert first.stats["local_iterations"] == params.local_iterations  # the limit bound
    if params.cpsat_work is not None:
        assert first.status != "optimal"  # stopped by the work limit, not by a proof
