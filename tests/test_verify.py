"""The independent checker: hand-built problems and results, valid ones and one broken rule each."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest

from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    GpuModel,
    Incumbent,
    Loss,
    MigInstance,
    MigProfile,
    Node,
    Placement,
    Problem,
    Result,
    Unit,
    Wallet,
    Winner,
)
from allocator.verify import ResultInvalid, Violation, check_or_raise, verify

H100 = "H100-80GB"  # 8 memory slices, 7 compute slices: 1g.10gb, 1g.10gb+me, ..., 7g.80gb
WHOLE = Unit("whole")


# ---------------------------------------------------------------------- builders
def node(
    name: str,
    *gpus: Gpu,
    cpu: int = 64_000,
    mem: int = 512_000,
    rack: str | None = None,
    zone: str | None = None,
) -> Node:
    return Node(name, cpu, mem, gpus, rack=rack, zone=zone)


def bid(bid_id: str, *alternatives: Alternative, wallet: str = "w") -> Bid:
    return Bid(bid_id, f"agent-{bid_id}", wallet, alternatives)


def problem(
    nodes: Sequence[Node],
    bids: Sequence[Bid],
    *,
    wallets: Sequence[Wallet] = (Wallet("w", 1e9),),
    incumbents: Sequence[Incumbent] = (),
    reserve: dict[str, float] | None = None,
    extra_models: Sequence[GpuModel] = (),
) -> Problem:
    return Problem(
        tuple(nodes),
        tuple(wallets),
        tuple(bids),
        tuple(incumbents),
        reserve or {},
        tuple(extra_models),
        round_id="r1",
    )


def win(
    prob: Problem,
    bid_id: str,
    *placements: Placement,
    alt: int = 0,
    payment: float = 0.0,
    value: float | None = None,
) -> Winner:
    """A winner whose value is looked up from the problem unless given."""
    if value is None:
        b = next(b for b in prob.bids if b.id == bid_id)
        value = b.alternatives[alt].value
    return Winner(bid_id, alt, value, payment, placements)


def result(
    prob: Problem,
    winners: Sequence[Winner] = (),
    *,
    evicted: Sequence[str] = (),
    losers: Sequence[Loss] | None = None,
    welfare: float | None = None,
    revenue: float | None = None,
    round_id: str = "r1",
) -> Result:
    """A result with consistent losers, welfare and revenue unless they are given."""
    won = {w.bid_id for w in winners}
    if losers is None:
        losers = [Loss(b.id, "outbid") for b in prob.bids if b.id not in won]
    if welfare is None:
        lost = sum(i.value + i.preemption_cost for i in prob.incumbents if i.id in evicted)
        welfare = sum(w.value for w in winners) - lost
    if revenue is None:
        revenue = sum(w.payment for w in winners)
    return Result(
        round_id, "greedy", "critical", "ok", tuple(winners), tuple(evicted), tuple(losers),
        welfare, revenue,
    )  # fmt: skip


def rules(violations: list[Violation]) -> list[str]:
    return sorted(v.rule for v in violations)


def whole_at(n: str, *gpus: int) -> Placement:
    return Placement(n, gpus)


def mig_at(n: str, gpu: int, profile: str, start: int) -> Placement:
    return Placement(n, (gpu,), profile, start)


def share_at(n: str, gpu: int, milli: int) -> Placement:
    return Placement(n, (gpu,), milli=milli)


def mig_alt(profile: str, value: float = 10.0, replicas: int = 1, **kw: object) -> Alternative:
    return Alternative(value, Unit("mig", profile=profile), replicas, **kw)  # type: ignore[arg-type]


def mig_problem(
    layout: Sequence[tuple[str, int]],
    *,
    model: str = H100,
    outside: Sequence[MigInstance] = (),
    incumbents: Sequence[Incumbent] = (),
) -> tuple[Problem, Result]:
    """One MIG GPU; bid ``m{k}`` asks for the k-th instance of ``layout`` and wins it there."""
    prob = problem(
        [node("n1", Gpu(0, model, "mig", mig_instances=tuple(outside)))],
        [bid(f"m{k}", mig_alt(p)) for k, (p, _) in enumerate(layout)],
        incumbents=incumbents,
    )
    winners = [win(prob, f"m{k}", mig_at("n1", 0, p, s)) for k, (p, s) in enumerate(layout)]
    return prob, result(prob, winners)


def mig_incumbent(inc_id: str, profile: str, start: int, *, preemptible: bool = True) -> Incumbent:
    return Incumbent(
        inc_id, "old", 5.0, (mig_at("n1", 0, profile, start),), preemptible=preemptible,
        preemption_cost=1.0,
    )  # fmt: skip


# ---------------------------------------------------------------------- valid results
def test_nobody_wins_is_valid() -> None:
    """A result where every bid loses with a known reason is valid."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    assert verify(prob, result(prob)) == []


def test_mixed_round_is_valid() -> None:
    """Whole, share and MIG winners next to a kept incumbent, with payments, pass every rule."""
    prob = problem(
        [
            node("n1", Gpu(0, "L4"), Gpu(1, "L4"), Gpu(2, "L4", "shared", used_milli=300)),
            node("n2", Gpu(0, H100, "mig"), Gpu(1, H100, "mig")),
        ],
        [
            bid("whole", Alternative(20, Unit("whole", gpus=2), cpu_milli=1000, memory_mib=10)),
            bid("share", Alternative(3, Unit("share", milli=700), locality="gpu")),
            bid("mig", Alternative(1, WHOLE), mig_alt("3g.40gb", 9, replicas=2, locality="node")),
            bid("poor", Alternative(1, WHOLE)),
        ],
        incumbents=[Incumbent("inc", "old", 4.0, (mig_at("n2", 1, "4g.40gb", 0),))],
    )
    winners = [
        win(prob, "whole", whole_at("n1", 0, 1), payment=15),
        win(prob, "share", share_at("n1", 2, 700), payment=3),
        win(prob, "mig", mig_at("n2", 0, "3g.40gb", 0), mig_at("n2", 1, "3g.40gb", 4), alt=1),
    ]
    assert verify(prob, result(prob, winners)) == []


def test_check_or_raise() -> None:
    """check_or_raise is silent on a valid result and raises ResultInvalid listing the rules."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    check_or_raise(prob, result(prob))
    with pytest.raises(ResultInvalid, match=r"welfare") as info:
        check_or_raise(prob, result(prob, welfare=3.0))
    assert isinstance(info.value, ValueError)
    assert rules(info.value.violations) == ["welfare"]


# ---------------------------------------------------------------------- winners
def test_unknown_bid() -> None:
    """A winner naming a bid that does not exist is reported."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    ghost = Winner("ghost", 0, 5.0, 0.0, (whole_at("n1", 0),))
    assert rules(verify(prob, result(prob, [ghost]))) == ["unknown.bid"]


def test_duplicate_winner() -> None:
    """The same bid cannot win twice."""
    prob = problem([node("n1", Gpu(0, "L4"), Gpu(1, "L4"))], [bid("a", Alternative(5, WHOLE))])
    w0, w1 = win(prob, "a", whole_at("n1", 0)), win(prob, "a", whole_at("n1", 1))
    res = result(prob, [w0, w1])
    found = verify(prob, res)
    assert rules(found) == ["duplicate.winner"]
    assert found[0].path == "winners[1].bid_id"


def test_alternative_index() -> None:
    """A winner pointing past its bid's alternatives is reported."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    w = Winner("a", 1, 5.0, 0.0, (whole_at("n1", 0),))
    assert rules(verify(prob, result(prob, [w]))) == ["alternative.index"]


def test_winner_value_must_match_alternative() -> None:
    """The reported value of a winner is its alternative's value."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    w = win(prob, "a", whole_at("n1", 0), value=6.0)
    assert rules(verify(prob, result(prob, [w]))) == ["winner.value"]


def test_gang_needs_one_placement_per_replica() -> None:
    """An alternative of 2 replicas placed once breaks the gang."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE, replicas=2))])
    assert rules(verify(prob, result(prob, [win(prob, "a", whole_at("n1", 0))]))) == ["gang"]


@pytest.mark.parametrize(
    ("unit", "placement"),
    [
        (Unit("whole", gpus=2), whole_at("n1", 0)),
        (WHOLE, share_at("n1", 0, 500)),
        (Unit("share", milli=300), share_at("n1", 0, 400)),
        (Unit("mig", profile="2g.20gb"), mig_at("n1", 0, "3g.40gb", 0)),
        (Unit("mig", profile="2g.20gb"), whole_at("n1", 0)),
    ],
)
def test_placement_kind_matches_unit(unit: Unit, placement: Placement) -> None:
    """A placement of the wrong kind, GPU count, milli or MIG profile for the unit is reported."""
    prob = problem([node("n1", Gpu(0, H100, "mig"))], [bid("a", Alternative(5, unit))])
    found = verify(prob, result(prob, [win(prob, "a", placement)]))
    assert rules(found) == ["placement.kind"]
    assert found[0].path == "winners[0].placements[0]"


def test_unknown_node_and_gpu() -> None:
    """Placements on a node or GPU index that does not exist are reported."""
    prob = problem(
        [node("n1", Gpu(0, "L4"))],
        [bid("a", Alternative(5, WHOLE)), bid("b", Alternative(5, WHOLE))],
    )
    res = result(prob, [win(prob, "a", whole_at("n9", 0)), win(prob, "b", whole_at("n1", 3))])
    assert rules(verify(prob, res)) == ["placement.gpu", "placement.node"]


# ---------------------------------------------------------------------- GPU modes and capacity
@pytest.mark.parametrize(
    ("gpu", "unit", "placement"),
    [
        (Gpu(0, H100, "mig"), WHOLE, whole_at("n1", 0)),
        (Gpu(0, "L4"), Unit("share", milli=500), share_at("n1", 0, 500)),
        (Gpu(0, H100), Unit("mig", profile="1g.10gb"), mig_at("n1", 0, "1g.10gb", 0)),
        (Gpu(0, H100, "shared"), Unit("mig", profile="1g.10gb"), mig_at("n1", 0, "1g.10gb", 0)),
    ],
)
def test_gpu_mode(gpu: Gpu, unit: Unit, placement: Placement) -> None:
    """Whole units need whole/shared GPUs, shares need shared GPUs, MIG needs mig GPUs."""
    prob = problem([node("n1", gpu)], [bid("a", Alternative(5, unit))])
    assert rules(verify(prob, result(prob, [win(prob, "a", placement)]))) == ["gpu.mode"]


def test_whole_gpu_has_one_owner() -> None:
    """Two winners on one whole GPU break capacity."""
    prob = problem(
        [node("n1", Gpu(0, "L4"))],
        [bid("a", Alternative(5, WHOLE)), bid("b", Alternative(4, WHOLE))],
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0)), win(prob, "b", whole_at("n1", 0))])
    found = verify(prob, res)
    assert rules(found) == ["capacity.whole"]
    assert found[0].path == "winners[1].placements[0].gpus"


def test_whole_gpu_held_by_kept_incumbent() -> None:
    """A kept incumbent's whole GPU cannot be given to a winner; evicting it frees the GPU."""
    inc = Incumbent("inc", "old", 2.0, (whole_at("n1", 0),), preemption_cost=0.5)
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))], incumbents=[inc])
    winners = [win(prob, "a", whole_at("n1", 0))]
    assert rules(verify(prob, result(prob, winners))) == ["capacity.whole"]
    assert verify(prob, result(prob, winners, evicted=["inc"])) == []


def test_whole_unit_on_empty_shared_gpu_is_valid() -> None:
    """A whole unit may take a shared GPU that nothing else uses."""
    prob = problem([node("n1", Gpu(0, "L4", "shared"))], [bid("a", Alternative(5, WHOLE))])
    assert verify(prob, result(prob, [win(prob, "a", whole_at("n1", 0))])) == []


@pytest.mark.parametrize("used_milli", [1, 0])
def test_whole_unit_on_used_shared_gpu(used_milli: int) -> None:
    """A whole unit cannot take a shared GPU with outside use or another winner's share."""
    prob = problem(
        [node("n1", Gpu(0, "L4", "shared", used_milli=used_milli))],
        [bid("s", Alternative(1, Unit("share", milli=100))), bid("a", Alternative(5, WHOLE))],
    )
    winners = [win(prob, "a", whole_at("n1", 0))]
    if not used_milli:
        winners.insert(0, win(prob, "s", share_at("n1", 0, 100)))
    assert rules(verify(prob, result(prob, winners))) == ["capacity.whole"]


def test_share_after_whole_on_shared_gpu() -> None:
    """No share fits on a shared GPU a winner holds whole."""
    prob = problem(
        [node("n1", Gpu(0, "L4", "shared"))],
        [bid("a", Alternative(5, WHOLE)), bid("s", Alternative(1, Unit("share", milli=100)))],
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0)), win(prob, "s", share_at("n1", 0, 100))])
    assert rules(verify(prob, res)) == ["capacity.whole"]


@pytest.mark.parametrize(("used", "ok"), [(200, True), (201, False)])
def test_shares_sum_to_at_most_1000_milli(used: int, ok: bool) -> None:
    """Shares plus outside used_milli may fill a GPU exactly but not beyond 1000 milli."""
    prob = problem(
        [node("n1", Gpu(0, "L4", "shared", used_milli=used))],
        [bid("a", Alternative(5, Unit("share", milli=400), replicas=2, locality="gpu"))],
    )
    res = result(prob, [win(prob, "a", share_at("n1", 0, 400), share_at("n1", 0, 400))])
    assert rules(verify(prob, res)) == ([] if ok else ["capacity.milli"])


# ---------------------------------------------------------------------- MIG
def test_mig_3g_and_4g_at_0_overlap() -> None:
    """3g@0 and 4g@0 on one GPU overlap."""
    prob, res = mig_problem([("3g.40gb", 0), ("4g.40gb", 0)])
    found = verify(prob, res)
    assert rules(found) == ["mig.overlap"]
    assert found[0].path == "winners[1].placements[0].mig_start"


def test_mig_4g_at_0_and_3g_at_4_is_legal() -> None:
    """4g@0 + 3g@4 fill an 8-slice GPU legally."""
    prob, res = mig_problem([("4g.40gb", 0), ("3g.40gb", 4)])
    assert verify(prob, res) == []


def test_mig_seven_1g_leave_slice_7_unusable_by_1g() -> None:
    """Seven 1g instances at 0..6 are legal; an eighth 1g would need slot 7, which is illegal."""
    seven = [("1g.10gb", s) for s in range(7)]
    prob, res = mig_problem(seven)
    assert verify(prob, res) == []
    prob, res = mig_problem([*seven, ("1g.10gb", 7)])
    assert rules(verify(prob, res)) == ["mig.start"]


def test_mig_start_7_illegal_on_8_slices() -> None:
    """1g.10gb cannot start at slot 7 of an 8-slice GPU."""
    prob, res = mig_problem([("1g.10gb", 7)])
    found = verify(prob, res)
    assert rules(found) == ["mig.start"]
    assert found[0].path == "winners[0].placements[0].mig_start"
    assert "legal starts" in found[0].message


def test_mig_start_must_be_in_table() -> None:
    """3g starts only at 0 or 4, even when the slices are free."""
    prob, res = mig_problem([("3g.40gb", 2)])
    assert rules(verify(prob, res)) == ["mig.start"]


def test_mig_two_media_instances() -> None:
    """Two +me instances on one 8-slice GPU are illegal."""
    prob, res = mig_problem([("1g.10gb+me", 0), ("1g.10gb+me", 3)])
    assert rules(verify(prob, res)) == ["mig.media"]


def test_mig_two_different_media_profiles_on_a30() -> None:
    """On an A30, 1g.6gb+me and 2g.12gb+me (each within its own max count) cannot coexist."""
    prob, res = mig_problem([("1g.6gb+me", 0), ("2g.12gb+me", 2)], model="A30-24GB")
    assert rules(verify(prob, res)) == ["mig.media"]


def test_mig_max_count() -> None:
    """More instances of a profile than its max_count break the rule even with free slices."""
    toy = GpuModel("TOY-4", 16, 4, 4, (MigProfile("1g.4gb", 1, 1, (0, 1, 2, 3), 2),))
    prob = problem(
        [node("n1", Gpu(0, "TOY-4", "mig"))],
        [bid(f"m{k}", mig_alt("1g.4gb")) for k in range(3)],
        extra_models=[toy],
    )
    res = result(prob, [win(prob, f"m{k}", mig_at("n1", 0, "1g.4gb", k)) for k in range(3)])
    assert rules(verify(prob, res)) == ["mig.max_count"]


def test_mig_profile_of_another_model() -> None:
    """A MIG profile the GPU's model does not have (A100-40GB's 1g.5gb on an H100) is reported."""
    prob, res = mig_problem([("1g.5gb", 0)])
    assert rules(verify(prob, res)) == ["mig.profile"]


def test_mig_outside_instances_block_their_slices() -> None:
    """Instances outside the market block their slices; the free ones can still be carved."""
    outside = [MigInstance("3g.40gb", 0)]
    prob, res = mig_problem([("4g.40gb", 0)], outside=outside)
    assert rules(verify(prob, res)) == ["mig.overlap"]
    prob, res = mig_problem([("3g.40gb", 4)], outside=outside)
    assert verify(prob, res) == []


def test_mig_kept_incumbent_blocks_and_evicted_frees() -> None:
    """A kept incumbent's instance blocks its slices; evicting it frees them."""
    inc = mig_incumbent("inc", "7g.80gb", 0)
    prob, res = mig_problem([("1g.10gb", 3)], incumbents=[inc])
    assert rules(verify(prob, res)) == ["mig.overlap"]
    evicting = result(prob, res.winners, evicted=["inc"])
    assert verify(prob, evicting) == []


def test_mig_kept_media_incumbent_counts() -> None:
    """A kept incumbent's +me instance leaves no room for a winner's +me instance."""
    inc = mig_incumbent("inc", "1g.10gb+me", 0)
    prob, res = mig_problem([("1g.10gb+me", 1)], incumbents=[inc])
    assert rules(verify(prob, res)) == ["mig.media"]


def test_non_preemptible_incumbent_cannot_be_evicted() -> None:
    """Evicting a non-preemptible incumbent is reported, even though it would free the slices."""
    inc = mig_incumbent("inc", "7g.80gb", 0, preemptible=False)
    prob, res = mig_problem([("1g.10gb", 3)], incumbents=[inc])
    found = verify(prob, result(prob, res.winners, evicted=["inc"]))
    assert rules(found) == ["incumbent.not_preemptible"]
    assert found[0].path == "evicted[0]"


# ---------------------------------------------------------------------- incumbents
def test_evicting_unknown_or_twice() -> None:
    """Evicted ids must name incumbents, once each."""
    inc = Incumbent("inc", "old", 1.0, (whole_at("n1", 0),))
    prob = problem([node("n1", Gpu(0, "L4"))], [], incumbents=[inc])
    res = result(prob, evicted=["nope", "inc", "inc"], welfare=-1.0)
    assert rules(verify(prob, res)) == ["incumbent.duplicate", "incumbent.unknown"]


# ---------------------------------------------------------------------- node resources
def test_node_cpu_counts_replicas_and_kept_incumbents() -> None:
    """CPU milli of every placed replica plus kept incumbents must fit the node."""
    inc = Incumbent("inc", "old", 1.0, (whole_at("n1", 0),), cpu_milli=2000)
    prob = problem(
        [node("n1", Gpu(0, "L4"), Gpu(1, "L4"), Gpu(2, "L4"), cpu=4999)],
        [bid("a", Alternative(5, WHOLE, replicas=2, cpu_milli=1500))],
        incumbents=[inc],
    )
    winners = [win(prob, "a", whole_at("n1", 1), whole_at("n1", 2))]
    found = verify(prob, result(prob, winners))
    assert rules(found) == ["cpu"]
    assert "use 5000 CPU milli of 4999" in found[0].message
    assert verify(prob, result(prob, winners, evicted=["inc"])) == []


def test_node_memory() -> None:
    """Memory MiB of the placed replicas must fit the node."""
    prob = problem(
        [node("n1", Gpu(0, "L4"), Gpu(1, "L4"), mem=1000)],
        [bid("a", Alternative(5, WHOLE, replicas=2, memory_mib=600))],
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0), whole_at("n1", 1))])
    assert rules(verify(prob, res)) == ["memory_mib"]


# ---------------------------------------------------------------------- models and memory
def test_one_model_per_alternative() -> None:
    """All GPUs of one alternative are of one model."""
    prob = problem(
        [node("n1", Gpu(0, "L4"), Gpu(1, "T4"))], [bid("a", Alternative(5, WHOLE, replicas=2))]
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0), whole_at("n1", 1))])
    assert rules(verify(prob, res)) == ["model"]


@pytest.mark.parametrize(("allowed", "ok"), [(("H100",), True), (("A100-80GB",), False)])
def test_allowed_models_by_alias(allowed: tuple[str, ...], ok: bool) -> None:
    """Allowed models may be aliases; a GPU of another model is reported."""
    prob = problem(
        [node("n1", Gpu(0, "NVIDIA-H100-80GB-HBM3"))],
        [bid("a", Alternative(5, WHOLE, models=allowed))],
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0))])
    assert rules(verify(prob, res)) == ([] if ok else ["model"])


@pytest.mark.parametrize(("need", "ok"), [(24.0, True), (24.5, False)])
def test_min_gpu_memory(need: float, ok: bool) -> None:
    """A GPU with less memory than min_gpu_memory_gb is reported; exactly enough is fine."""
    prob = problem(
        [node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE, min_gpu_memory_gb=need))]
    )
    res = result(prob, [win(prob, "a", whole_at("n1", 0))])
    assert rules(verify(prob, res)) == ([] if ok else ["memory"])


# ---------------------------------------------------------------------- locality
def _two_nodes(**kw: str | None) -> list[Node]:
    r1, r2 = kw.get("rack1"), kw.get("rack2")
    z1, z2 = kw.get("zone1"), kw.get("zone2")
    return [
        node("n1", Gpu(0, "L4", nvlink="a"), Gpu(1, "L4", nvlink="b"), rack=r1, zone=z1),
        node("n2", Gpu(0, "L4"), Gpu(1, "L4"), rack=r2, zone=z2),
    ]


@pytest.mark.parametrize(
    ("locality", "where", "topology", "ok"),
    [
        ("nvlink", [("n2", 0), ("n2", 1)], {}, True),  # nvlink None: the node is one domain
        ("nvlink", [("n1", 0), ("n1", 1)], {}, False),
        ("nvlink", [("n1", 0), ("n2", 0)], {}, False),
        ("node", [("n1", 0), ("n1", 1)], {}, True),
        ("node", [("n1", 0), ("n2", 0)], {}, False),
        ("rack", [("n1", 0), ("n2", 0)], {"rack1": "r", "rack2": "r"}, True),
        ("rack", [("n1", 0), ("n2", 0)], {"rack1": "r", "rack2": "s"}, False),
        ("rack", [("n1", 0), ("n2", 0)], {"rack1": "r"}, False),
        ("rack", [("n1", 0), ("n1", 1)], {"rack1": "r"}, True),
        ("rack", [("n2", 0), ("n2", 1)], {"rack1": "r"}, True),  # no rack: a rack of its own
        ("zone", [("n2", 0), ("n2", 1)], {"zone1": "z"}, True),
        ("zone", [("n1", 0), ("n2", 0)], {"zone1": "z", "zone2": "z"}, True),
        ("zone", [("n1", 0), ("n2", 0)], {"zone1": "z", "zone2": "y"}, False),
        ("any", [("n1", 0), ("n2", 1)], {"rack1": "r"}, True),
    ],
)
def test_locality(
    locality: str, where: list[tuple[str, int]], topology: dict[str, str], ok: bool
) -> None:
    """Replicas stay within the NVLink domain, node, rack or zone their locality asks for."""
    prob = problem(_two_nodes(**topology), [bid("a", Alternative(5, WHOLE, 2, locality=locality))])
    res = result(prob, [win(prob, "a", *(whole_at(n, g) for n, g in where))])
    assert rules(verify(prob, res)) == ([] if ok else ["locality"])


def test_locality_gpu_for_shares() -> None:
    """Locality 'gpu' puts all share replicas on one GPU; spreading them is reported."""
    prob = problem(
        [node("n1", Gpu(0, "L4", "shared"), Gpu(1, "L4", "shared"))],
        [bid("a", Alternative(5, Unit("share", milli=300), 2, locality="gpu"))],
    )
    same = result(prob, [win(prob, "a", share_at("n1", 0, 300), share_at("n1", 0, 300))])
    apart = result(prob, [win(prob, "a", share_at("n1", 0, 300), share_at("n1", 1, 300))])
    assert verify(prob, same) == []
    assert rules(verify(prob, apart)) == ["locality"]


# ---------------------------------------------------------------------- money
def test_wallet_balance_bounds_winning_values() -> None:
    """The values of a wallet's winning bids together may not exceed its balance."""
    prob = problem(
        [node("n1", Gpu(0, "L4"), Gpu(1, "L4"))],
        [bid("a", Alternative(6, WHOLE)), bid("b", Alternative(5, WHOLE))],
        wallets=[Wallet("w", 10.0)],
    )
    one = result(prob, [win(prob, "a", whole_at("n1", 0), payment=1)])
    both = result(prob, [win(prob, "a", whole_at("n1", 0)), win(prob, "b", whole_at("n1", 1))])
    assert verify(prob, one) == []
    found = verify(prob, both)
    assert rules(found) == ["wallet"]
    assert "11" in found[0].message and "10" in found[0].message


@pytest.mark.parametrize(
    ("gpu", "alternative", "placement", "ok"),
    [
        (Gpu(0, "L4"), Alternative(8.0, Unit("whole", gpus=2)), whole_at("n1", 0, 1), True),
        (Gpu(0, "L4"), Alternative(7.9, Unit("whole", gpus=2)), whole_at("n1", 0, 1), False),
        (Gpu(0, H100, "mig"), mig_alt("3g.40gb", 12 * 3 / 7), mig_at("n1", 0, "3g.40gb", 0), True),
        (Gpu(0, H100, "mig"), mig_alt("3g.40gb", 5.1), mig_at("n1", 0, "3g.40gb", 0), False),
        (
            Gpu(0, "L4", "shared"), Alternative(1.0, Unit("share", milli=250)),
            share_at("n1", 0, 250), True,
        ),
        (
            Gpu(0, "L4", "shared"), Alternative(0.99, Unit("share", milli=250)),
            share_at("n1", 0, 250), False,
        ),
    ],
)  # fmt: skip
def test_reserve_price_per_gpu_equivalent(
    gpu: Gpu, alternative: Alternative, placement: Placement, ok: bool
) -> None:
    """Value must reach the reserve per GPU-equivalent (GPUs, compute/7 for MIG, milli/1000)."""
    second = Gpu(1, gpu.model, gpu.mode)
    prob = problem(
        [node("n1", gpu, second)],
        [bid("a", alternative)],
        reserve={"L4": 4.0, "H100": 12.0},  # "H100" is an alias of H100-80GB
    )
    res = result(prob, [win(prob, "a", placement)])
    assert rules(verify(prob, res)) == ([] if ok else ["reserve"])


@pytest.mark.parametrize(
    ("payment", "rule"), [(5.5, "payment.above_bid"), (-0.5, "payment.negative")]
)
def test_payment_between_zero_and_bid(payment: float, rule: str) -> None:
    """A winner pays at least 0 and at most its bid."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    res = result(prob, [win(prob, "a", whole_at("n1", 0), payment=payment)])
    assert rules(verify(prob, res)) == [rule]


def test_revenue_is_sum_of_payments() -> None:
    """Reported revenue must equal the payments' sum."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    res = result(prob, [win(prob, "a", whole_at("n1", 0), payment=2)], revenue=3.0)
    assert rules(verify(prob, res)) == ["revenue"]


def test_welfare_subtracts_evictions() -> None:
    """Welfare is winners' value minus evicted incumbents' value and preemption cost."""
    inc = Incumbent("inc", "old", 2.0, (whole_at("n1", 0),), preemption_cost=0.5)
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))], incumbents=[inc])
    winners = [win(prob, "a", whole_at("n1", 0))]
    assert verify(prob, result(prob, winners, evicted=["inc"], welfare=2.5)) == []
    found = verify(prob, result(prob, winners, evicted=["inc"], welfare=5.0))
    assert rules(found) == ["welfare"]


# ---------------------------------------------------------------------- losers and round
def test_every_bid_wins_or_loses_exactly_once() -> None:
    """Missing, repeated, unknown and winning losers are each reported."""
    prob = problem(
        [node("n1", Gpu(0, "L4"))],
        [bid(x, Alternative(5, WHOLE)) for x in ("a", "b", "c")],
    )
    losers = [Loss("a", "outbid"), Loss("b", "outbid"), Loss("b", "outbid"), Loss("zz", "outbid")]
    res = result(prob, [win(prob, "a", whole_at("n1", 0))], losers=losers)
    assert rules(verify(prob, res)) == [
        "loser.duplicate",
        "loser.is_winner",
        "loser.missing",
        "unknown.bid",
    ]


def test_loser_reason_is_known() -> None:
    """A loss reason outside LOSS_REASONS is reported."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    res = result(prob, losers=[Loss("a", "unlucky")])
    assert rules(verify(prob, res)) == ["loser.reason"]


def test_round_id_matches() -> None:
    """A result for another round is reported."""
    prob = problem([node("n1", Gpu(0, "L4"))], [bid("a", Alternative(5, WHOLE))])
    assert rules(verify(prob, result(prob, round_id="r0"))) == ["round_id"]


# ---------------------------------------------------------------------- independence
def test_checker_imports_no_solver() -> None:
    """allocator.verify imports neither the solvers nor the C++ core (it is the second opinion)."""
    root = Path(__file__).resolve().parents[1] / "allocator" / "verify"
    for path in root.glob("*.py"):
        for stmt in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(stmt, ast.Import):
                names = [a.name for a in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                names = [stmt.module or ""]
            for name in names:
                assert not name.startswith(("allocator.solvers", "allocator._core")), path
