"""Scenario table for the C++ engine's own policies: where greedy places things, what it charges.

These outcomes are choices of the native packer and ranking (best fit, FGD shares, MIG slot
choice, incumbent-free first, critical payments), so they are checked against greedy/local only;
tests/test_scenarios.py holds the outcomes every solver must reach.
"""

from __future__ import annotations

from typing import Any

import pytest

from allocator import problem_from_dict, solve, verify


def _node(name: str, gpus: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"name": name, "cpu_milli": 64000, "memory_mib": 512000, "gpus": gpus, **kw}


def _gpus(n: int, model: str = "H100", mode: str = "whole", **kw: Any) -> list[dict[str, Any]]:
    return [{"index": i, "model": model, "mode": mode, **kw} for i in range(n)]


def _bid(name: str, value: float, unit: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "id": name,
        "bidder": name,
        "wallet": "w",
        "alternatives": [{"value": value, "unit": unit, **kw}],
    }


WHOLE = {"kind": "whole"}

SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "best-fit-node",
        "why": "a 2-GPU job goes to the node with exactly 2 free GPUs; the 8-GPU node stays whole",
        "problem": {
            "nodes": [_node("big", _gpus(8)), _node("small", _gpus(2))],
            "bids": [_bid("job", 5, {"kind": "whole", "gpus": 2})],
        },
        "expect": {"winners": ["job"], "nodes": {"job": ["small"]}},
    },
    {
        "name": "fgd-share-fills-the-partly-used-gpu",
        "why": "a 400-milli share completes the GPU with 600 used rather than opening a fresh one",
        "problem": {
            "nodes": [
                _node(
                    "n",
                    [
                        {"index": 0, "model": "T4", "mode": "shared"},
                        {"index": 1, "model": "T4", "mode": "shared", "used_milli": 600},
                    ],
                )
            ],
            "bids": [_bid("s", 1, {"kind": "share", "milli": 400})],
        },
        "expect": {"winners": ["s"], "gpus": {"s": [1]}},
    },
    {
        "name": "mig-prefers-the-carved-gpu",
        "why": "a 3g goes next to an existing 4g (slot 4), leaving the empty GPU free for a 7g",
        "problem": {
            "nodes": [
                _node(
                    "n",
                    [
                        {"index": 0, "model": "A100-80GB", "mode": "mig"},
                        {
                            "index": 1,
                            "model": "A100-80GB",
                            "mode": "mig",
                            "mig_instances": [{"profile": "4g.40gb", "start": 0}],
                        },
                    ],
                )
            ],
            "bids": [
                _bid("a", 3, {"kind": "mig", "profile": "3g.40gb"}),
                _bid("b", 2, {"kind": "mig", "profile": "7g.80gb"}),
            ],
        },
        "expect": {"winners": ["a", "b"], "gpus": {"a": [1], "b": [0]}, "starts": {"a": [4]}},
    },
    {
        "name": "free-gpu-before-eviction",
        "why": "with one GPU free and one held by a cheap incumbent, nobody is evicted",
        "problem": {
            "nodes": [_node("n", _gpus(2))],
            "bids": [_bid("x", 100, WHOLE)],
            "incumbents": [
                {"id": "old", "bidder": "o", "value": 1, "placements": [{"node": "n", "gpus": [0]}]}
            ],
        },
        "expect": {"winners": ["x"], "evicted": [], "gpus": {"x": [1]}},
    },
    {
        "name": "critical-payment-is-the-displaced-density",
        "why": "two 1-GPU winners on 2 GPUs pay the value of the best loser (4), not their bids",
        "problem": {
            "nodes": [_node("n", _gpus(2))],
            "bids": [_bid("a", 9, WHOLE), _bid("b", 7, WHOLE), _bid("c", 4, WHOLE)],
        },
        "expect": {"winners": ["a", "b"], "payments": {"a": 4.0, "b": 4.0}},
    },
    {
        "name": "reserve-floors-the-payment",
        "why": "alone on the cluster a winner pays the reserve cost (3 per GPU x 2 GPUs)",
        "problem": {
            "nodes": [_node("n", _gpus(2))],
            "bids": [_bid("a", 10, {"kind": "whole", "gpus": 2})],
            "reserve_prices": {"H100-80GB": 3.0},
        },
        "expect": {"winners": ["a"], "payments": {"a": 6.0}},
    },
    {
        "name": "local-beats-greedy-density-trap",
        "why": "greedy takes the denser 1-GPU bid (6) and strands a GPU; local takes the 2-GPU 8",
        "problem": {
            "nodes": [_node("n", _gpus(2))],
            "bids": [
                _bid("a", 6, WHOLE),
                _bid("b", 8, {"kind": "whole", "gpus": 2}),
                _bid("c", 1, WHOLE),
            ],
        },
        "expect": {"winners": ["a", "c"], "winners_local": ["b"]},
    },
]


def _case_ids() -> list[Any]:
    return [pytest.param(sc, id=sc["name"]) for sc in SCENARIOS]


@pytest.mark.parametrize("scenario", _case_ids())
def test_native_scenario(scenario: dict[str, Any]) -> None:
    """Greedy (and local where given) reach the hand-checked outcome and pass the checker."""
    data = {"wallets": [{"name": "w", "balance": 1e6}], **scenario["problem"]}
    problem = problem_from_dict(data)
    result = solve(problem, solver="greedy", payments="critical")
    assert verify(problem, result) == []
    expect = scenario["expect"]
    winners = {w.bid_id: w for w in result.winners}
    assert sorted(winners) == sorted(expect["winners"])
    if "evicted" in expect:
        assert sorted(result.evicted) == expect["evicted"]
    for bid, nodes in expect.get("nodes", {}).items():
        assert sorted({p.node for p in winners[bid].placements}) == nodes
    for bid, gpus in expect.get("gpus", {}).items():
        assert sorted(g for p in winners[bid].placements for g in p.gpus) == gpus
    for bid, starts in expect.get("starts", {}).items():
        assert [p.mig_start for p in winners[bid].placements] == starts
    for bid, pay in expect.get("payments", {}).items():
        assert winners[bid].payment == pytest.approx(pay)
    if "winners_local" in expect:
        local = solve(problem, solver="local", payments="critical", time_limit=2.0, seed=1)
        assert verify(problem, local) == []
        assert sorted(w.bid_id for w in local.winners) == sorted(expect["winners_local"])
