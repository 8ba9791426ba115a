"""Known properties of the payment rules outside the theory's assumptions, pinned with their
numbers (docs/concepts.md, "Where critical is not truthful"): an agent's own losing bid that its
wallet cannot pay for sets the critical payment of its winner."""

from __future__ import annotations

from allocator import solve, verify
from allocator.model import Alternative, Bid, Gpu, Node, Problem, Unit, Wallet


def _round(alice_balance: float, with_a2: bool) -> Problem:
    node = Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    bids = [Bid("a1", "alice", "alice", (Alternative(10, Unit("whole")),))]
    if with_a2:
        bids.append(Bid("a2", "alice", "alice", (Alternative(9, Unit("whole")),)))
    bids.append(Bid("b1", "bob", "bob", (Alternative(5, Unit("whole")),)))
    return Problem((node,), (Wallet("alice", alice_balance), Wallet("bob", 100)), tuple(bids))


def _payments(problem: Problem) -> dict[str, float]:
    result = solve(problem, solver="greedy", payments="critical")
    assert verify(problem, result) == []  # payments <= bids, no wallet overdrawn
    return {w.bid_id: w.payment for w in result.winners}


def test_an_unaffordable_own_bid_sets_the_winners_payment() -> None:
    """Wallet 12: a1 wins and pays 9, set by alice's own a2 (which loses: 2 left in the wallet);
    without a2 the same GPU costs her 0. With 20 both win, priced by bob's 5."""
    assert _payments(_round(12, with_a2=True)) == {"a1": 9.0, "b1": 0.0}
    assert _payments(_round(12, with_a2=False)) == {"a1": 0.0, "b1": 0.0}
    assert _payments(_round(20, with_a2=True)) == {"a1": 5.0, "a2": 5.0}


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
