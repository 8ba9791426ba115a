"""Scenario tables (tests/scenarios/*.json): hand-checked outcomes, run against every solver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from allocator import problem_from_dict, solve, verify
from allocator.model import Result, placement_to_dict

HERE = Path(__file__).resolve().parent / "scenarios"
SOLVERS = ("greedy", "local", "cpsat", "auto")


def _cases() -> list[Any]:
    cases = []
    for path in sorted(HERE.glob("*.json")):
        for sc in json.loads(path.read_text(encoding="utf-8"))["scenarios"]:
            for solver in sc.get("solvers", SOLVERS):
                cases.append(pytest.param(sc, solver, id=f"{path.stem}:{sc['name']}:{solver}"))
    return cases


def _check(result: Result, expect: dict[str, Any]) -> None:
    winners = {w.bid_id: w for w in result.winners}
    assert sorted(winners) == sorted(expect["winners"])
    if "evicted" in expect:
        assert sorted(result.evicted) == sorted(expect["evicted"])
    reasons = {x.bid_id: x.reason for x in result.losers}
    for bid, reason in expect.get("reasons", {}).items():
        assert reasons.get(bid) == reason, f"{bid}: {reasons.get(bid)} != {reason}"
    for bid, places in expect.get("placements", {}).items():
        assert [placement_to_dict(p) for p in winners[bid].placements] == places
    for bid, gpus in expect.get("gpus_used", {}).items():
        assert sorted(g for p in winners[bid].placements for g in p.gpus) == gpus
    for bid, alt in expect.get("alternatives", {}).items():
        assert winners[bid].alternative == alt
    if "mig_starts_used" in expect:
        starts = sorted(
            p.mig_start for w in result.winners for p in w.placements if p.mig_start is not None
        )
        assert starts == expect["mig_starts_used"]


@pytest.mark.parametrize(("scenario", "solver"), _cases())
def test_scenario(scenario: dict[str, Any], solver: str) -> None:
    """The solver reaches the hand-checked outcome, and the independent checker accepts it."""
    problem = problem_from_dict(scenario["problem"])
    result = solve(problem, solver=solver, time_limit=5.0)
    assert verify(problem, result) == []
    _check(result, scenario["expect"])
    for w in result.winners:
        assert 0.0 <= w.payment <= w.value + 1e-9
