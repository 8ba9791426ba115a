"""SolveParams: one validated object for every option of a solve, loadable from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from allocator import solve
from allocator.examples import demo_problem
from allocator.model import ProblemError
from allocator.solvers import SolveParams


def test_defaults_are_the_documented_ones() -> None:
    p = SolveParams()
    assert (p.solver, p.payments, p.time_limit, p.threads, p.seed) == (
        "auto",
        "auto",
        10.0,
        1,
        0,
    )
    assert p.alpha == 0.75 and p.local_iterations is None and p.cpsat_work is None
    assert p.packing == "fgd"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("solver", "fastest"),
        ("payments", "second-price"),
        ("time_limit", 0),
        ("time_limit", float("nan")),
        ("threads", -1),
        ("seed", -3),
        ("alpha", -0.5),
        ("workload_hint", "yes"),
        ("fragment_scale", float("inf")),
        ("node_order", (0, 0)),
        ("local_iterations", -1),
        ("cpsat_work", 0.0),
        ("auto_cpsat_max_bids", 1.5),
        ("packing", "ss"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ProblemError) as e:
        SolveParams(**{field: value})  # type: ignore[arg-type]
    assert e.value.path == field


def test_vcg_needs_the_exact_solver() -> None:
    with pytest.raises(ProblemError, match="vcg needs the exact solver"):
        SolveParams(solver="greedy", payments="vcg")


def test_toml_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        'solver = "local"\nlocal_iterations = 200\ncpsat_work = 5.0\nnode_order = [1, 0]\n',
        encoding="utf-8",
    )
    p = SolveParams.from_toml(f)
    assert p.solver == "local" and p.local_iterations == 200 and p.node_order == (1, 0)
    assert SolveParams.from_mapping(p.to_dict()) == p


def test_toml_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("solverr = 'greedy'\n", encoding="utf-8")
    with pytest.raises(ProblemError, match="not a solve parameter") as e:
        SolveParams.from_toml(f)
    assert e.value.path == "solverr" and str(f) in str(e.value)
    f.write_text("time_limit = -2\n", encoding="utf-8")
    with pytest.raises(ProblemError) as e:
        SolveParams.from_toml(f)
    assert e.value.path == "time_limit" and str(f) in str(e.value)
    f.write_text("solver = \n", encoding="utf-8")
    with pytest.raises(ProblemError, match="not valid TOML"):
        SolveParams.from_toml(f)
    with pytest.raises(ProblemError, match="cannot read"):
        SolveParams.from_toml(tmp_path / "missing.toml")


def test_solve_takes_params_and_shortcuts_override_them() -> None:
    problem = demo_problem()
    params = SolveParams(solver="greedy", payments="first-price")
    by_params = solve(problem, params=params)
    assert by_params.solver == "greedy" and by_params.payment_rule == "first-price"
    overridden = solve(problem, params=params, payments="critical")
    assert overridden.payment_rule == "critical"
    assert [w.bid_id for w in overridden.winners] == [w.bid_id for w in by_params.winners]
    with pytest.raises(ProblemError) as e:
        solve(problem, params={"solver": "greedy"})  # type: ignore[arg-type]
    assert e.value.path == "params"


def test_work_limits_make_local_search_and_cpsat_repeatable() -> None:
    """With work limits (and a wall limit that does not bind), two solves agree exactly."""
    problem = demo_problem()
    params = SolveParams(
        solver="cpsat", time_limit=60.0, local_iterations=50, cpsat_work=2.0, payments="first-price"
    )
    a, b = solve(problem, params=params), solve(problem, params=params)
    assert a.winners == b.winners and a.stats["bound"] == b.stats["bound"]
    local = SolveParams(solver="local", local_iterations=7, time_limit=60.0)
    r = solve(problem, params=local)
    assert r.stats["solver_used"] == "local" and r.stats["local_iterations"] <= 7
