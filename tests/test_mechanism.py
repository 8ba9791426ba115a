"""Properties of the payment rules outside the theory's assumptions, pinned with their numbers
(docs/concepts.md, "An agent's own losing bids"): an agent's bids that its wallet cannot pay for
never price its winners, so withdrawing them does not lower what it pays; another agent's bid on
the same wallet still does, and so do the agent's own bids that lost for capacity."""

from __future__ import annotations

import dataclasses

import pytest

from allocator import solve, verify
from allocator.instances import (
    fleet_problem,
    random_problem,
)
from allocator.model import Alternative, Bid, Gpu, Node, Problem, Unit, Wallet
from allocator.sim.traces import data_dir
from allocator.solvers import SolveParams


def _round(alice_balance: float, with_a2: bool, a2_from: str = "alice") -> Problem:
    node = Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    bids = [Bid("a1", "alice", "alice", (Alternative(10, Unit("whole")),))]
    if with_a2:  # a2 draws on alice's wallet; sent by alice, or by a teammate sharing it
        bids.append(Bid("a2", a2_from, "alice", (Alternative(9, Unit("whole")),)))
    bids.append(Bid("b1", "bob", "bob", (Alternative(5, Unit("whole")),)))
    return Problem((node,), (Wallet("alice", alice_balance), Wallet("bob", 100)), tuple(bids))


def _payments(problem: Problem) -> dict[str, float]:
    result = solve(problem, solver="greedy", payments="critical")
    assert verify(problem, result) == []  # payments <= bids, no wallet overdrawn
    return {w.bid_id: w.payment for w in result.winners}


def test_an_own_unaffordable_bid_does_not_set_the_winners_payment() -> None:
    """Wallet 12: a1 wins; alice's own a2 loses (2 left in the wallet). Without a1, a2 would win
    and a1, placed below it, could no longer be paid for: a1's plain critical value is 9. Her
    own losing a2 is left out of a1's price, so a1 pays 0 (the reserve), as without a2:
    withdrawing a2 gains her nothing. With 20 both win, priced by bob's 5."""
    assert _payments(_round(12, with_a2=True)) == {"a1": 0.0, "b1": 0.0}
    assert _payments(_round(12, with_a2=False)) == {"a1": 0.0, "b1": 0.0}
    assert _payments(_round(20, with_a2=True)) == {"a1": 5.0, "a2": 5.0}


def test_a_teammates_unaffordable_bid_on_the_same_wallet_still_prices() -> None:
    """The same a2 sent by carol, who shares alice's wallet: another agent's bid, competing for
    the wallet's money, so it sets a1's critical value, 9."""
    assert _payments(_round(12, with_a2=True, a2_from="carol")) == {"a1": 9.0, "b1": 0.0}


def test_alternatives_of_one_bid_do_not_price_each_other() -> None:
    """The same two wishes as alternatives of one XOR bid: the 10 wins and pays the reserve (0),
    as without a2 above: the replay that prices a bid removes all of its alternatives."""
    node = Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    alts = (Alternative(10, Unit("whole")), Alternative(9, Unit("whole")))
    bids = (
        Bid("a", "alice", "alice", alts),
        Bid("b1", "bob", "bob", (Alternative(5, Unit("whole")),)),
    )
    problem = Problem((node,), (Wallet("alice", 12), Wallet("bob", 100)), bids)
    assert _payments(problem) == {"a": 0.0, "b1": 0.0}


def _fleet_round(seed: int) -> Problem:
    """GPUs to spare (150 bids on 1,200 GPUs of the spot-gpu fleet), 30 agents whose wallets
    hold 30-80% of what they ask: where plain critical prices winners by their agents' own
    unaffordable bids (benchmarks/own_bids.py)."""
    fleet = data_dir() / "spot-gpu" / "node_info_df.csv"
    return fleet_problem(fleet, 150, seed, gpus=1200, agents=30, round_id="round")


@pytest.mark.parametrize("rule", ["critical", "los"])
def test_withdrawing_an_agents_losing_bids_changes_none_of_its_payments(rule: str) -> None:
    """Every agent's bids that lost over budget are withdrawn in turn and the round solved again
    (random rounds with binding wallets, and fleet rounds with GPUs to spare). Where the greedy
    allocation stays the same (the packer weighs fragmentation against the round's bids, so
    withdrawing may move others' placements), the agent pays exactly the same for the same wins:
    its unaffordable bids were left out of its prices (under plain critical most fleet-round
    agents here would pay less after withdrawing)."""
    params = SolveParams(solver="greedy", payments=rule)
    same = 0
    rounds = [random_problem(s, gpus=32, bids=100, wallets=6, incumbents=4) for s in range(8)]
    for problem in [*rounds, _fleet_round(1), _fleet_round(2)]:
        base = solve(problem, params=params)
        assert verify(problem, base) == []
        lost = {x.bid_id for x in base.losers if x.reason == "over_budget"}
        for agent in sorted({b.bidder for b in problem.bids}):
            mine = {b.id for b in problem.bids if b.bidder == agent}
            drop = mine & lost
            if not drop or not mine - drop:
                continue
            kept = tuple(b for b in problem.bids if b.id not in drop)
            after = solve(dataclasses.replace(problem, bids=kept), params=params)
            placed = {w.bid_id: (w.alternative, w.placements) for w in base.winners}
            if placed != {w.bid_id: (w.alternative, w.placements) for w in after.winners}:
                continue
            before = {w.bid_id: w.payment for w in base.winners if w.bid_id in mine}
            assert {w.bid_id: w.payment for w in after.winners if w.bid_id in mine} == before
            same += 1
    assert same >= 10
