"""Which rule prices a round (``payments="auto"``), and the audit of a round ``los`` priced:
exact critical payments of a sample of winners against what ``los`` charged."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from allocator import solve, verify
from allocator.cli import main
from allocator.instances import random_problem
from allocator.model import ProblemError, result_from_dict, result_to_dict
from allocator.solvers import SolveParams
from allocator.solvers.native import NativeEngine

ROUND = random_problem(3, gpus=48, bids=150, wallets=6, incumbents=6)


def test_auto_prices_small_rounds_exactly_and_large_ones_with_los() -> None:
    small = solve(ROUND, params=SolveParams(solver="greedy"))  # 150 bids <= 1,000
    assert small.payment_rule == "critical" and small.audit is None
    exact = solve(ROUND, params=SolveParams(solver="greedy", payments="critical"))
    assert [w.payment for w in small.winners] == [w.payment for w in exact.winners]
    large = solve(ROUND, params=SolveParams(solver="greedy", auto_critical_max_bids=149))
    assert large.payment_rule == "los" and large.audit is not None
    los = solve(ROUND, params=SolveParams(solver="greedy", payments="los"))
    assert [w.payment for w in large.winners] == [w.payment for w in los.winners]
    assert verify(ROUND, large) == []


def test_the_audit_of_every_winner_is_the_comparison_with_exact_payments() -> None:
    """With a sample as large as the round, the audit's figures are those of comparing los
    with exact critical payments winner by winner."""
    params = SolveParams(solver="greedy", payments="los", audit_sample=10_000, audit_time=60.0)
    result = solve(ROUND, params=params)
    exact = {
        w.bid_id: w.payment
        for w in solve(ROUND, params=params.replace(payments="critical")).winners
    }
    errors = [abs(w.payment - exact[w.bid_id]) / w.value for w in result.winners]
    audit = result.audit
    assert audit is not None and audit.complete
    assert audit.rule == "los"
    assert audit.winners == audit.sampled == audit.replayed == len(result.winners)
    assert audit.mean_err == pytest.approx(sum(errors) / len(errors))
    assert audit.max_err == pytest.approx(max(errors))
    assert audit.within_1pct == pytest.approx(sum(e <= 0.01 for e in errors) / len(errors))
    over = sum(w.payment - exact[w.bid_id] > 0.01 * w.value for w in result.winners)
    assert audit.overcharged == over
    assert audit.revenue_ratio == pytest.approx(result.revenue / sum(exact.values()))
    # The round's figures survive its JSON form.
    assert result_from_dict(json.loads(json.dumps(result_to_dict(result)))) == result


def test_the_audit_samples_with_the_seed_and_stops_at_its_time_budget() -> None:
    base = SolveParams(solver="greedy", payments="los", audit_sample=5)
    one = solve(ROUND, params=base)
    assert one.audit is not None and (one.audit.sampled, one.audit.replayed) == (5, 5)
    again = solve(ROUND, params=base).audit
    assert again is not None  # the same sample: equal up to the measured time
    assert dataclasses.replace(again, time_ms=0.0) == dataclasses.replace(one.audit, time_ms=0.0)
    # No time at all: the first sampled winner is still replayed, and the audit says it is cut.
    cut = solve(ROUND, params=base.replace(audit_time=0.0)).audit
    assert cut is not None and (cut.sampled, cut.replayed) == (5, 1) and not cut.complete
    assert solve(ROUND, params=base.replace(audit_sample=0)).audit is None


def test_exact_payments_of_some_winners_equal_those_of_all() -> None:
    engine = NativeEngine(ROUND)
    alloc = engine.greedy()
    every = engine.critical_payments(alloc)
    some = random.Random(1).sample(sorted(alloc.winners), 7)
    assert engine.critical_payments_of(alloc, some, 60.0) == {b: every[b] for b in some}
    loser = next(b for b in range(len(ROUND.bids)) if b not in alloc.winners)
    # The core's input errors arrive as ValueError naming the field.
    with pytest.raises(ValueError, match=r"^bids\[1\]: is not a winner"):
        engine.critical_payments_of(alloc, [some[0], loser], 60.0)
    with pytest.raises(ValueError, match=r"^time_budget: "):
        engine.critical_payments_of(alloc, some, -1.0)


@pytest.mark.parametrize(
    ("field", "value"), [("audit_sample", -1), ("audit_time", -0.5), ("audit_time", float("nan"))]
)
def test_bad_audit_parameters_name_their_field(field: str, value: object) -> None:
    with pytest.raises(ProblemError) as e:
        SolveParams(**{field: value})  # type: ignore[arg-type]
    assert e.value.path == field


def test_cli_prints_the_audit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--solver", "greedy", "--payments", "los"]) == 0
    out = capsys.readouterr().out
    assert "payments los" in out
    assert "audit of los:" in out and "winners priced exactly" in out
    assert main(["demo", "--solver", "greedy", "--payments", "auto", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["payment_rule"] == "critical" and "audit" not in result
