"""Hypothesis properties over seeded random rounds (allocator.instances.random_problem)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import Problem, Result, solve, verify
from allocator.instances import extra_models_for, random_bids, random_problem, spot_gpu_nodes
from allocator.model import Wallet
from allocator.sim.traces import data_dir

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
seeds = st.integers(min_value=0, max_value=10_000)


def _problem(seed: int, gpus: int, bids: int) -> Problem:
    return random_problem(seed, gpus=gpus, bids=bids, wallets=4, incumbents=3)


def _generous(problem: Problem) -> Problem:
    """Every bid an agent of its own, in its own wallet that can afford anything: single-minded
    bidders, isolated from each other (no bid is another's own losing bid)."""
    total = 1e12  # far above any value the tests raise a bid to
    bids = tuple(
        dataclasses.replace(b, bidder=f"own-{b.id}", wallet=f"own-{b.id}") for b in problem.bids
    )
    wallets = tuple(Wallet(f"own-{b.id}", total) for b in problem.bids)
    incumbents = tuple(dataclasses.replace(x, wallet=None) for x in problem.incumbents)
    return dataclasses.replace(problem, bids=bids, wallets=wallets, incumbents=incumbents)


def _with_value(problem: Problem, bid_id: str, value: float) -> Problem:
    """``problem`` with every alternative of ``bid_id`` worth ``value``."""
    bids = tuple(
        dataclasses.replace(
            b, alternatives=tuple(dataclasses.replace(a, value=value) for a in b.alternatives)
        )
        if b.id == bid_id
        else b
        for b in problem.bids
    )
    return dataclasses.replace(problem, bids=bids)


def _check_market(problem: Problem, result: Result) -> None:
    assert verify(problem, result) == []
    for w in result.winners:
        assert -1e-9 <= w.payment <= w.value + 1e-9
    balance = {w.name: w.balance for w in problem.wallets}
    spent: dict[str, float] = {}
    wallet_of = {b.id: b.wallet for b in problem.bids}
    for w in result.winners:
        spent[wallet_of[w.bid_id]] = spent.get(wallet_of[w.bid_id], 0.0) + w.payment
    for name, amount in spent.items():
        assert amount <= balance[name] + 1e-6


@SETTINGS
@given(seed=seeds, gpus=st.sampled_from([8, 16, 24]), bids=st.integers(5, 40))
def test_every_solver_passes_verify_and_cpsat_bounds_the_rest(
    seed: int, gpus: int, bids: int
) -> None:
    """All solvers give valid results with payments <= bids and no wallet overspent;
    CP-SAT's proven optimum >= local >= greedy welfare."""
    problem = _problem(seed, gpus, bids)
    welfare = {}
    for solver in ("greedy", "local", "cpsat"):
        result = solve(problem, solver=solver, time_limit=10.0, seed=seed)
        _check_market(problem, result)
        welfare[solver] = result.welfare
        if solver == "cpsat":
            assert result.status == "optimal"
    assert welfare["cpsat"] >= welfare["local"] - 1e-6
    assert welfare["local"] >= welfare["greedy"] - 1e-6


@SETTINGS
@given(seed=seeds, bids=st.integers(5, 40), raise_by=st.floats(1.01, 3.0))
def test_raising_a_winning_bid_keeps_it_winning(seed: int, bids: int, raise_by: float) -> None:
    """Under greedy, a winner that bids more still wins (allocation monotone in the bid)."""
    problem = _generous(random_problem(seed, gpus=16, bids=bids, alternatives=1, incumbents=3))
    result = solve(problem, solver="greedy", payments="critical")
    for w in result.winners[:5]:
        higher = solve(_with_value(problem, w.bid_id, w.value * raise_by), solver="greedy")
        assert higher.winner(w.bid_id) is not None, w.bid_id


@SETTINGS
@given(
    seed=seeds,
    bids=st.integers(5, 30),
    factor=st.sampled_from([0.25, 0.5, 0.8, 0.95, 1.05, 1.5, 3.0]),
)
def test_misreports_never_raise_utility_under_critical(seed: int, bids: int, factor: float) -> None:
    """A single-minded bidder never gains by reporting another value under greedy + critical."""
    problem = _generous(random_problem(seed, gpus=16, bids=bids, alternatives=1, incumbents=3))
    truthful = solve(problem, solver="greedy", payments="critical")
    for bid in problem.bids[:6]:
        true_value = bid.alternatives[0].value
        honest = truthful.winner(bid.id)
        u_honest = true_value - honest.payment if honest is not None else 0.0
        lie = solve(_with_value(problem, bid.id, true_value * factor), solver="greedy")
        won = lie.winner(bid.id)
        u_lie = true_value - won.payment if won is not None else 0.0
        assert u_lie <= u_honest + 1e-6 * max(1.0, true_value), (bid.id, u_lie, u_honest)


@SETTINGS
@given(seed=seeds)
def test_critical_payment_is_a_threshold(seed: int) -> None:
    """Bidding just above the critical payment still wins; just below it loses (greedy)."""
    problem = _generous(random_problem(seed, gpus=16, bids=25, alternatives=1, incumbents=2))
    result = solve(problem, solver="greedy", payments="critical")
    for w in result.winners[:4]:
        above = solve(_with_value(problem, w.bid_id, w.payment * 1.001 + 1e-6), solver="greedy")
        assert above.winner(w.bid_id) is not None
        if w.payment > 1e-3:
            below = solve(_with_value(problem, w.bid_id, w.payment * 0.999), solver="greedy")
            assert below.winner(w.bid_id) is None


@SETTINGS
@given(seed=seeds)
def test_critical_payment_is_a_threshold_without_incumbents(seed: int) -> None:
    """The same with nothing preemptible, where the payment scan tracks a witness node for the
    priced bid instead of searching the cluster again, on rounds large enough for long replays."""
    problem = _generous(random_problem(seed, gpus=32, bids=45, alternatives=1, incumbents=0))
    result = solve(problem, solver="greedy", payments="critical")
    for w in result.winners[:6]:
        above = solve(_with_value(problem, w.bid_id, w.payment * 1.001 + 1e-6), solver="greedy")
        assert above.winner(w.bid_id) is not None
        if w.payment > 1e-3:
            below = solve(_with_value(problem, w.bid_id, w.payment * 0.999), solver="greedy")
            assert below.winner(w.bid_id) is None


@pytest.mark.parametrize("seed", [1, 2])
def test_critical_payment_is_a_threshold_on_a_production_fleet(seed: int) -> None:
    """The threshold property where the payment replay's shortcuts all fire (many dirty nodes,
    runner-up records, gang searches over dirty and original nodes, witness nodes): the
    spot-gpu fleet cut to 1,000 GPUs (MIG, whole and shared nodes in racks), 1,500 single-minded
    bids with gangs (oversubscribed), each in a wallet of its own. For a spread of the winners
    that pay (and a few that pay nothing), bidding just above the payment still wins and just
    below it loses, by re-running greedy."""
    nodes = spot_gpu_nodes(data_dir() / "spot-gpu" / "node_info_df.csv", 1000)
    modes = {g.mode for n in nodes for g in n.gpus}
    bid_list, wallets = random_bids(random.Random(seed), 1500, 60, modes, alternatives=1)
    problem = _generous(
        Problem(
            nodes=nodes,
            wallets=wallets,
            bids=bid_list,
            extra_models=extra_models_for(nodes),
            round_id=f"fleet-{seed}",
        )
    )
    result = solve(problem, solver="greedy", payments="critical")
    assert verify(problem, result) == []
    paying = sorted((w for w in result.winners if w.payment > 1e-3), key=lambda w: w.payment)
    free = [w for w in result.winners if w.payment <= 1e-3]
    assert len(paying) > 100, len(paying)
    sample = paying[:: max(1, len(paying) // 14)] + free[:: max(1, len(free) // 3 + 1)]
    for w in sample:
        above = _with_value(problem, w.bid_id, w.payment * (1 + 1e-6) + 1e-6)
        assert solve(above, solver="greedy", payments="first-price").winner(w.bid_id), w
        if w.payment > 1e-3:
            below = _with_value(problem, w.bid_id, w.payment * (1 - 1e-6))
            assert solve(below, solver="greedy", payments="first-price").winner(w.bid_id) is None, w
