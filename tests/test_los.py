"""The ``los`` payment rule (cpp/src/los.cpp): exact where the theory says it must be, always
valid, and what it does with wallets and with allocations the greedy run did not make."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import solve, verify
from allocator.instances import random_problem
from allocator.model import Alternative, Bid, Gpu, Node, Problem, Unit, Wallet
from allocator.solvers import SolveParams


def _payments(problem: Problem, rule: str, solver: str = "greedy") -> dict[str, float]:
    params = SolveParams(solver=solver, payments=rule, local_iterations=2000)
    result = solve(problem, params=params)
    assert verify(problem, result) == []
    return {w.bid_id: w.payment for w in result.winners}


@settings(max_examples=150, deadline=None)
@given(
    gpus=st.integers(1, 8),
    wishes=st.lists(
        st.tuples(st.integers(1, 8), st.floats(0.5, 50, allow_nan=False)), min_size=1, max_size=14
    ),
)
def test_los_equals_critical_for_single_minded_bids_on_one_node(
    gpus: int, wishes: list[tuple[int, float]]
) -> None:
    """One node of whole GPUs, one alternative per bid, no wallet binding: the run without a
    winner is the same run with its GPUs free until the first bid that fits in them, so the
    first bid a winner blocked sets its critical value (Lehmann, O'Callaghan and Shoham)."""
    node = Node("n", 64000, 512000, gpus=tuple(Gpu(i, "H100") for i in range(gpus)))
    bids = tuple(
        Bid(f"b{i}", f"a{i}", "w", (Alternative(round(v, 3), Unit("whole", gpus=min(n, gpus))),))
        for i, (n, v) in enumerate(wishes)
    )
    problem = Problem((node,), (Wallet("w", 1e9),), bids)
    exact, los = _payments(problem, "critical"), _payments(problem, "los")
    assert exact.keys() == los.keys()
    for b, pay in exact.items():
        assert los[b] == pytest.approx(pay, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("solver", ["greedy", "local"])
def test_los_results_pass_verify(seed: int, solver: str) -> None:
    """Random rounds with MIG, shares, gangs, wallets and incumbents: payments within bids and
    reserves, no wallet overdrawn (verify), the rule named in the Result."""
    problem = random_problem(seed, gpus=32, bids=120, wallets=6, incumbents=6)
    params = SolveParams(solver=solver, payments="los", local_iterations=500)
    result = solve(problem, params=params)
    assert verify(problem, result) == []
    assert result.payment_rule == "los"


def test_own_losing_bids_are_left_out_of_the_wallet_threshold() -> None:
    """The example of docs/concepts.md: alice's a2 (9), which her wallet (12) cannot pay for
    after a1 (10), is her own losing bid: left out, a1 pays the reserve, as under critical and
    as without a2. Sent by carol on the same wallet, a2 prices a1 at 9, as under critical."""
    node = Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    a1 = Bid("a1", "alice", "alice", (Alternative(10, Unit("whole")),))
    a2 = Bid("a2", "alice", "alice", (Alternative(9, Unit("whole")),))
    c2 = Bid("a2", "carol", "alice", (Alternative(9, Unit("whole")),))
    b1 = Bid("b1", "bob", "bob", (Alternative(5, Unit("whole")),))
    wallets = (Wallet("alice", 12), Wallet("bob", 100))
    assert _payments(Problem((node,), wallets, (a1, a2, b1)), "los") == {"a1": 0.0, "b1": 0.0}
    assert _payments(Problem((node,), wallets, (a1, b1)), "los") == {"a1": 0.0, "b1": 0.0}
    assert _payments(Problem((node,), wallets, (a1, c2, b1)), "los") == {"a1": 9.0, "b1": 0.0}
    assert _payments(Problem((node,), wallets, (a1, c2, b1)), "critical")["a1"] == 9.0


def test_a_winner_the_greedy_run_did_not_make_pays_its_bid() -> None:
    """Local search replaces greedy's two small winners by the 2-GPU bid worth 8: the rule reads
    thresholds off the greedy run, which never made that winner, so it pays its bid. Under
    greedy, b0 pays what the bid it blocked was worth at its size, as under critical."""
    node = Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100")))
    bids = (
        Bid("b0", "a0", "w", (Alternative(6, Unit("whole")),)),
        Bid("b1", "a1", "w", (Alternative(8, Unit("whole", gpus=2)),)),
        Bid("b2", "a2", "w", (Alternative(1, Unit("whole")),)),
    )
    problem = Problem((node,), (Wallet("w", 1e9),), bids)
    assert _payments(problem, "los", solver="local") == {"b1": 8.0}
    greedy = _payments(problem, "los")  # b0 blocked b1 (8 over 2 GPUs): b1's score at b0's size
    assert greedy == _payments(problem, "critical") and greedy["b0"] == pytest.approx(8 / 2**0.75)


def test_a_bid_that_wins_with_freed_money_does_not_spend_twice() -> None:
    """x's 9 is more than alice's wallet (12) has left after a1 (10); x wins with its 2 instead.
    Without a1, x wins with its 9 and never reaches its 2, so 3 is left and a1 would win down to
    zero (critical pays 0). The wallet walk used to count both of x's alternatives as spent,
    found 1 left below c's score (1.5) and charged a1 x's 2."""
    node = Node("n1", 64000, 512000, gpus=tuple(Gpu(i, "H100") for i in range(4)))
    a1 = Bid("a1", "alice", "alice", (Alternative(10, Unit("whole")),))
    x = Bid("x", "alice", "alice", (Alternative(9, Unit("whole")), Alternative(2, Unit("whole"))))
    c = Bid("c", "carol", "carol", (Alternative(1.5, Unit("whole")),))
    problem = Problem((node,), (Wallet("alice", 12), Wallet("carol", 100)), (a1, x, c))
    exact, los = _payments(problem, "critical"), _payments(problem, "los")
    assert exact["a1"] == pytest.approx(0.0)
    assert los["a1"] == pytest.approx(exact["a1"], abs=1e-9)


def test_a_gang_that_can_spread_is_not_blocked_by_an_item_in_its_room() -> None:
    """g (two 1-GPU replicas, any locality) fills n0; c1 and c2 (too much CPU to share a node)
    leave one GPU free on n1 and n2, so x (2 GPUs on one node) loses. x would fit on n0 freed of
    g, but g would still fit on the GPUs left on n1 and n2: without g, x wins on a node of its
    own and g still wins below it, down to zero (critical pays 0). The rule used to charge g
    x's value (6)."""
    nodes = tuple(
        Node(f"n{k}", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100"))) for k in range(3)
    )
    bids = (
        Bid("g", "a", "w", (Alternative(10, Unit("whole"), replicas=2, locality="any"),)),
        Bid("c1", "c1", "w", (Alternative(5, Unit("whole"), cpu_milli=60000),)),
        Bid("c2", "c2", "w", (Alternative(4.5, Unit("whole"), cpu_milli=60000),)),
        Bid("x", "x", "w", (Alternative(6, Unit("whole", gpus=2), locality="node"),)),
    )
    problem = Problem(nodes, (Wallet("w", 1e9),), bids)
    exact, los = _payments(problem, "critical"), _payments(problem, "los")
    assert "x" not in los
    assert exact["g"] == pytest.approx(0.0)
    assert los["g"] == pytest.approx(exact["g"], abs=1e-9)


def test_a_winner_with_room_elsewhere_is_not_blocked_by_an_item_in_its_room() -> None:
    """b (one GPU of any model) wins on n0's A100s, the smaller model; c (H100 only) takes one of
    n1's H100s, so x (two A100s on one node) loses with one A100 free on n0. x would fit on n0
    freed of b, but b would still fit on n1's free H100: without b, x wins on n0 and b still
    wins below it, down to zero (critical pays 0). The rule used to charge b x's value."""
    nodes = (
        Node("n0", 64000, 512000, gpus=(Gpu(0, "A100-40GB"), Gpu(1, "A100-40GB"))),
        Node("n1", 64000, 512000, gpus=(Gpu(0, "H100"), Gpu(1, "H100"))),
    )
    bids = (
        Bid("b", "b", "w", (Alternative(10, Unit("whole")),)),
        Bid("c", "c", "w", (Alternative(5, Unit("whole"), models=("H100",)),)),
        Bid(
            "x",
            "x",
            "w",
            (Alternative(8, Unit("whole", gpus=2), models=("A100-40GB",), locality="node"),),
        ),
    )
    problem = Problem(nodes, (Wallet("w", 1e9),), bids)
    exact, los = _payments(problem, "critical"), _payments(problem, "los")
    assert set(los) == {"b", "c"}
    assert exact["b"] == pytest.approx(0.0)
    assert los["b"] == pytest.approx(exact["b"], abs=1e-9)
