"""Tests of the exact CP-SAT solver: hand-solved rounds, a brute-force cross-check, VCG.

The feasibility checker and the brute-force search below are written here, independently of the
solver, so that the solver is held to a second reading of the model's rules.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import warnings

import pytest

from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    ProblemError,
    Unit,
    Wallet,
)
from allocator.model.catalog import CATALOG
from allocator.solvers.assemble import Allocation, welfare
from allocator.solvers.cpsat import mig_layouts, solve_cpsat, vcg_payments


# --------------------------------------------------------------------------- independent checker
def _gpu(problem: Problem, node: str, index: int) -> Gpu | None:
    return next((g for g in problem.node(node).gpus if g.index == index), None)


def violations(problem: Problem, alloc: Allocation, *, partial: bool = False) -> list[str]:
    """Every rule ``alloc`` breaks; ``partial`` skips the replica count (for the search)."""
    out: list[str] = []
    users: dict[tuple[str, int], list[Placement]] = {}
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    spent: dict[str, float] = {}
    for i in alloc.evicted:
        if not problem.incumbents[i].preemptible:
            out.append(f"non-preemptible incumbent {i} evicted")
    for i, inc in enumerate(problem.incumbents):
        if i in alloc.evicted:
            continue
        for pl in inc.placements:
            cpu[pl.node] = cpu.get(pl.node, 0) + inc.cpu_milli
            mem[pl.node] = mem.get(pl.node, 0) + inc.memory_mib
            for g in pl.gpus:
                users.setdefault((pl.node, g), []).append(pl)
    for b, (k, placements) in alloc.winners.items():
        bid = problem.bids[b]
        alt = bid.alternatives[k]
        spent[bid.wallet] = spent.get(bid.wallet, 0.0) + alt.value
        if not partial and len(placements) != alt.replicas:
            out.append(f"bid {b}: {len(placements)} placements for {alt.replicas} replicas")
        models: set[str] = set()
        gpus_used: list[tuple[str, int]] = []
        for pl in placements:
            cpu[pl.node] = cpu.get(pl.node, 0) + alt.cpu_milli
            mem[pl.node] = mem.get(pl.node, 0) + alt.memory_mib
            for g in pl.gpus:
                gpu = _gpu(problem, pl.node, g)
                if gpu is None:
                    out.append(f"bid {b}: no GPU {g} on {pl.node}")
                    continue
                users.setdefault((pl.node, g), []).append(pl)
                gpus_used.append((pl.node, g))
                model = problem.model(gpu.model)
                models.add(model.name)
                if alt.models and model.name not in {problem.model(m).name for m in alt.models}:
                    out.append(f"bid {b}: model {model.name} not allowed")
                if model.memory_gb < alt.min_gpu_memory_gb:
                    out.append(f"bid {b}: GPU memory too small")
                u = alt.unit
                if u.kind == "whole" and (pl.kind != "whole" or gpu.mode == "mig"):
                    out.append(f"bid {b}: whole unit placed as {pl.kind} on {gpu.mode}")
                if u.kind == "whole" and len(pl.gpus) != u.gpus:
                    out.append(f"bid {b}: {len(pl.gpus)} GPUs for a {u.gpus}-GPU replica")
                if u.kind == "share" and (gpu.mode != "shared" or pl.milli != u.milli):
                    out.append(f"bid {b}: bad share placement")
                if u.kind == "mig" and (gpu.mode != "mig" or pl.mig_profile != u.profile):
                    out.append(f"bid {b}: bad MIG placement")
        if len(models) > 1:
            out.append(f"bid {b}: several models {models}")
        for name in models:
            m = problem.model(name)
            u = alt.unit
            if u.kind == "whole":
                eq = float(alt.replicas * u.gpus)
            elif u.kind == "share":
                eq = alt.replicas * u.milli / 1000
            else:
                prof = m.profile(u.profile or "")
                eq = alt.replicas * prof.compute / m.compute_units if prof else 0.0
            price = max(
                (v for key, v in problem.reserve_prices.items() if problem.model(key).name == name),
                default=0.0,
            )
            if alt.value < price * eq - 1e-9:
                out.append(f"bid {b}: below reserve")
        nodes = {n for n, _ in gpus_used}
        loc = alt.locality
        if loc == "gpu" and len(set(gpus_used)) > 1:
            out.append(f"bid {b}: gpu locality broken")
        if loc in ("nvlink", "node") and len(nodes) > 1:
            out.append(f"bid {b}: {loc} locality broken (nodes)")
        if loc == "nvlink":
            domains = {_gpu(problem, n, g).nvlink for n, g in gpus_used}  # type: ignore[union-attr]
            if len(domains) > 1:
                out.append(f"bid {b}: nvlink locality broken")
        for attr in ("rack", "zone"):
            if loc == attr:
                keys = {getattr(problem.node(n), attr) or n for n in nodes}
                if len(keys) > 1:
                    out.append(f"bid {b}: {attr} locality broken")
    for (node, index), pls in users.items():
        gpu = _gpu(problem, node, index)
        if gpu is None:
            continue
        wholes = [p for p in pls if p.kind == "whole"]
        if wholes and (len(pls) > 1 or gpu.used_milli):
            out.append(f"{node}/{index}: whole GPU not exclusive")
        milli = gpu.used_milli + sum(p.milli for p in pls)
        if milli > 1000:
            out.append(f"{node}/{index}: {milli} milli")
        migs = [(p.mig_profile or "", p.mig_start or 0) for p in pls if p.kind == "mig"]
        migs += [(x.profile, x.start) for x in gpu.mig_instances]
        if migs:
            model = problem.model(gpu.model)
            slots = [0] * model.mig_units
            count: dict[str, int] = {}
            media = 0
            for name, start in migs:
                prof = model.profile(name)
                if prof is None or start not in prof.starts:
                    out.append(f"{node}/{index}: illegal {name}@{start}")
                    continue
                for s in range(start, start + prof.size):
                    slots[s] += 1
                count[name] = count.get(name, 0) + 1
                media += prof.media
                if count[name] > prof.max_count:
                    out.append(f"{node}/{index}: too many {name}")
            if max(slots) > 1:
                out.append(f"{node}/{index}: MIG instances overlap")
            if media > 1:
                out.append(f"{node}/{index}: two +me instances")
    for n in problem.nodes:
        if cpu.get(n.name, 0) > n.cpu_milli or mem.get(n.name, 0) > n.memory_mib:
            out.append(f"{n.name}: cpu/memory over capacity")
    for w in problem.wallets:
        if spent.get(w.name, 0.0) > w.balance + 1e-9:
            out.append(f"wallet {w.name} over budget")
    return out


# --------------------------------------------------------------------------- brute force
def _candidates(problem: Problem, alt: Alternative) -> list[Placement]:
    """Every placement of one replica of ``alt`` on its own (GPU-level rules only)."""
    out: list[Placement] = []
    u = alt.unit
    for n in problem.nodes:
        if u.kind == "whole":
            ok = [g.index for g in n.gpus if g.mode in ("whole", "shared")]
            out += [Placement(n.name, c) for c in itertools.combinations(ok, u.gpus)]
        for g in n.gpus:
            if u.kind == "share" and g.mode == "shared":
                out.append(Placement(n.name, (g.index,), milli=u.milli))
            if u.kind == "mig" and g.mode == "mig":
                prof = problem.model(g.model).profile(u.profile or "")
                if prof is not None:
                    out += [Placement(n.name, (g.index,), prof.name, s) for s in prof.starts]
    return out


def _fits(problem: Problem, choice: dict[int, int], evicted: frozenset[int]) -> bool:
    """Whether the chosen alternatives can all be placed (depth-first search with pruning)."""
    jobs = [(b, k) for b, k in sorted(choice.items())]
    slots = [(b, k, r) for b, k in jobs for r in range(problem.bids[b].alternatives[k].replicas)]
    cands = {(b, k): _candidates(problem, problem.bids[b].alternatives[k]) for b, k in jobs}
    placed: dict[int, list[tuple[int, Placement]]] = {b: [] for b, _ in jobs}

    def alloc() -> Allocation:
        return Allocation(
            {b: (choice[b], tuple(p for _, p in ps)) for b, ps in placed.items()}, evicted
        )

    def dfs(i: int) -> bool:
        if i == len(slots):
            return not violations(problem, alloc())
        b, k, r = slots[i]
        lo = placed[b][-1][0] if r > 0 else 0  # replicas are interchangeable: keep them sorted
        for j in range(lo, len(cands[(b, k)])):
            placed[b].append((j, cands[(b, k)][j]))
            if not violations(problem, alloc(), partial=True) and dfs(i + 1):
                return True
            placed[b].pop()
        return False

    return dfs(0)


def brute_force(problem: Problem) -> float:
    """Best welfare over every XOR choice and eviction set, by exhaustive search."""
    options: list[list[int]] = [[-1, *range(len(b.alternatives))] for b in problem.bids]
    movable = [i for i, inc in enumerate(problem.incumbents) if inc.preemptible]
    cases: list[tuple[float, dict[int, int], frozenset[int]]] = []
    for pick in itertools.product(*options):
        choice = {b: k for b, k in enumerate(pick) if k >= 0}
        value = sum(problem.bids[b].alternatives[k].value for b, k in choice.items())
        for size in range(len(movable) + 1):
            for gone in itertools.combinations(movable, size):
                lost = sum(
                    problem.incumbents[i].value + problem.incumbents[i].preemption_cost
                    for i in gone
                )
                cases.append((value - lost, choice, frozenset(gone)))
    cases.sort(key=lambda c: -c[0])
    for value, choice, evicted in cases:
        if _fits(problem, choice, evicted):
            return value
    raise AssertionError("the empty allocation always fits")


def random_problem(rng: random.Random) -> Problem:
    """A tiny random round: 2 nodes x 2 GPUs (A30 MIG, T4 whole/shared), 3 bids, 0-1 incumbent."""
    nodes = []
    for n in range(2):
        gpus = []
        for i in range(2):
            mode = rng.choice(["whole", "shared", "mig"])
            model = "A30-24GB" if mode == "mig" or rng.random() < 0.5 else "T4"
            outside = (MigInstance("1g.6gb", 3),) if mode == "mig" and rng.random() < 0.3 else ()
            gpus.append(Gpu(i, model, mode, nvlink=rng.choice([None, "a"]), mig_instances=outside))
        nodes.append(
            Node(
                f"n{n}",
                cpu_milli=rng.choice([2000, 8000]),
                memory_mib=8000,
                gpus=tuple(gpus),
                rack=rng.choice(["r1", "r2"]),
            )
        )
    units = [
        Unit("whole"),
        Unit("whole", gpus=2),
        Unit("share", milli=400),
        Unit("share", milli=700),
        Unit("mig", profile="1g.6gb"),
        Unit("mig", profile="2g.12gb"),
        Unit("mig", profile="4g.24gb"),
        Unit("mig", profile="1g.6gb+me"),
    ]
    bids = []
    for b in range(3):
        alts = []
        for _ in range(rng.randint(1, 2)):
            unit = rng.choice(units)
            loc = rng.choice(["any", "any", "gpu", "nvlink", "node", "rack"])
            if loc == "gpu" and unit.kind == "whole":
                loc = "node"
            alts.append(
                Alternative(
                    float(rng.randint(1, 10)),
                    unit,
                    replicas=rng.randint(1, 2),
                    cpu_milli=rng.choice([0, 1000]),
                    locality=loc,
                    models=rng.choice([(), ("T4",), ("A30",)]) if unit.kind != "mig" else (),
                )
            )
        bids.append(Bid(f"b{b}", f"p{b}", rng.choice(["w1", "w2"]), tuple(alts)))
    incumbents = []
    if rng.random() < 0.6:
        n = rng.randrange(2)
        g = nodes[n].gpus[rng.randrange(2)]
        if g.mode == "mig":
            pl = Placement(f"n{n}", (g.index,), "2g.12gb", 0)
        elif g.mode == "shared":
            pl = Placement(f"n{n}", (g.index,), milli=500)
        else:
            pl = Placement(f"n{n}", (g.index,))
        incumbents.append(
            Incumbent(
                "inc",
                "old",
                float(rng.randint(0, 6)),
                (pl,),
                preemptible=rng.random() < 0.7,
                preemption_cost=float(rng.randint(0, 2)),
            )
        )
    wallets = (Wallet("w1", float(rng.randint(5, 20))), Wallet("w2", float(rng.randint(5, 20))))
    reserve = {"T4": 2.0} if rng.random() < 0.3 else {}
    return Problem(tuple(nodes), wallets, tuple(bids), tuple(incumbents), reserve)


# --------------------------------------------------------------------------- helpers
def _solve(problem: Problem, warm: Allocation | None = None) -> Allocation:
    alloc = solve_cpsat(problem, warm_start=warm, time_limit=10.0, seed=0)
    assert alloc.stats["status"] == "OPTIMAL"
    assert violations(problem, alloc) == []
    return alloc


def _one_node(*gpus: Gpu, cpu: int = 64000) -> tuple[Node, ...]:
    return (Node("n1", cpu_milli=cpu, memory_mib=1 << 20, gpus=gpus),)


def _bid(name: str, *alts: Alternative, wallet: str = "w", bidder: str | None = None) -> Bid:
    return Bid(name, bidder or name, wallet, alts)


RICH = (Wallet("w", 1e6),)


# --------------------------------------------------------------------------- hand-solved rounds
def test_xor_takes_the_best_alternative_of_one_bid() -> None:
    """At most one alternative of a bid wins, and the solver picks the most valuable that fits."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "T4"))
    bid = _bid(
        "a",
        Alternative(5, Unit("whole")),
        Alternative(9, Unit("whole", gpus=2)),
        Alternative(20, Unit("whole", gpus=3)),
    )
    alloc = _solve(Problem(nodes, RICH, (bid,)))
    assert dict(alloc.winners)[0][0] == 1
    assert alloc.stats["objective"] == pytest.approx(9)


def test_gang_is_all_or_nothing() -> None:
    """A gang that needs more replicas than fit wins nothing; a smaller bid takes the GPUs."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "T4"), Gpu(2, "T4"))
    bids = (
        _bid("gang", Alternative(100, Unit("whole"), replicas=4)),
        _bid("one", Alternative(1, Unit("whole"))),
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    assert set(alloc.winners) == {1}


def test_wallet_budget_binds() -> None:
    """Bids charged to one wallet never sum above its balance, even with room on the GPUs."""
    nodes = _one_node(*(Gpu(i, "T4") for i in range(3)))
    bids = tuple(_bid(f"b{v}", Alternative(v, Unit("whole"))) for v in (6, 5, 4))
    alloc = _solve(Problem(nodes, (Wallet("w", 9.5),), bids))
    assert set(alloc.winners) == {1, 2}  # 5 + 4 fits 9.5; 6 + 5 and 6 + 4 do not
    assert alloc.stats["objective"] == pytest.approx(9)


def test_budget_rows_are_added_when_the_relaxation_overspends() -> None:
    """Without budget rows the three bids would win (15 > 9.5): the wallet's row comes back."""
    nodes = _one_node(*(Gpu(i, "T4") for i in range(3)))
    bids = tuple(_bid(f"b{v}", Alternative(v, Unit("whole"))) for v in (6, 5, 4))
    alloc = _solve(Problem(nodes, (Wallet("w", 9.5), Wallet("rich", 1e6)), bids))
    assert set(alloc.winners) == {1, 2}
    assert alloc.stats["phases"] == 2


def test_nvlink_groups_are_merged_for_other_bids() -> None:
    """Two NVLink domains of two GPUs: an NVLink gang takes one domain, a node-local pair the
    other (15 beats 10 + 3 + 1); the shares of a 700m NVLink gang get 300m neighbours."""
    gpus = tuple(Gpu(i, "T4", nvlink="x" if i < 2 else "y") for i in range(4))
    bids = (
        _bid("gang", Alternative(10, Unit("whole"), replicas=2, locality="nvlink")),
        _bid("one", Alternative(3, Unit("whole"), locality="nvlink")),
        _bid("pair", Alternative(5, Unit("whole"), replicas=2, locality="node")),
        _bid("lone", Alternative(1, Unit("whole"))),
    )
    alloc = _solve(Problem(_one_node(*gpus), RICH, bids))
    assert set(alloc.winners) == {0, 2}
    shared = tuple(Gpu(i, "T4", "shared", nvlink="x" if i < 2 else "y") for i in range(4))
    bids = (
        _bid("gang", Alternative(10, Unit("share", milli=700), replicas=2, locality="nvlink")),
        *(_bid(f"s{k}", Alternative(2, Unit("share", milli=300), replicas=3)) for k in range(2)),
        _bid("whole", Alternative(2.5, Unit("whole"), replicas=2, locality="node")),
    )
    alloc = _solve(Problem(_one_node(*shared), RICH, bids))
    assert set(alloc.winners) == {0, 1, 2}  # 14: the pair of whole GPUs leaves 2 shares, not 3


def test_mig_3g_at_0_and_4g_at_0_conflict() -> None:
    """3g@0 and 4g@0 never coexist, so 4g + 3g must use 4g@0 + 3g@4 and two 3g + 4g do not fit."""
    nodes = _one_node(Gpu(0, "H100-80GB", "mig"))
    bids = (
        _bid("a", Alternative(5, Unit("mig", profile="3g.40gb"), replicas=2)),
        _bid("b", Alternative(4, Unit("mig", profile="4g.40gb"))),
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    assert set(alloc.winners) == {0}
    bids = (
        _bid("a", Alternative(5, Unit("mig", profile="3g.40gb"))),
        _bid("b", Alternative(4, Unit("mig", profile="4g.40gb"))),
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    starts = {p.mig_profile: p.mig_start for _, ps in alloc.winners.values() for p in ps}
    assert starts == {"3g.40gb": 4, "4g.40gb": 0}


def test_mig_outside_instances_block_their_slices() -> None:
    """A 1g instance held outside the market at slot 0 leaves no room for 4g (start 0 only)."""
    gpu = Gpu(0, "H100-80GB", "mig", mig_instances=(MigInstance("1g.10gb", 0),))
    bids = (
        _bid("a", Alternative(5, Unit("mig", profile="4g.40gb"))),
        _bid("b", Alternative(1, Unit("mig", profile="3g.40gb"))),
    )
    alloc = _solve(Problem(_one_node(gpu), RICH, bids))
    assert set(alloc.winners) == {1}
    assert alloc.winners[1][1][0].mig_start == 4


def test_one_media_instance_per_gpu() -> None:
    """Two +me instances never share a GPU, so the second goes to the other GPU."""
    nodes = _one_node(Gpu(0, "A30-24GB", "mig"), Gpu(1, "A30-24GB", "mig"))
    bids = (
        _bid("a", Alternative(3, Unit("mig", profile="1g.6gb+me"), replicas=2, locality="gpu")),
        _bid("b", Alternative(2, Unit("mig", profile="1g.6gb+me"), replicas=2)),
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    assert set(alloc.winners) == {1}


def test_eviction_only_when_it_pays() -> None:
    """An incumbent is evicted when a newcomer outbids its value plus preemption cost, else kept."""
    nodes = _one_node(Gpu(0, "T4"))
    inc = Incumbent("old", "o", 5, (Placement("n1", (0,)),), preemption_cost=2)
    for value, evicted in ((6.5, False), (7.5, True)):
        bids = (_bid("new", Alternative(value, Unit("whole"))),)
        alloc = _solve(Problem(nodes, RICH, bids, (inc,)))
        assert (alloc.evicted == {0}) is evicted
        assert bool(alloc.winners) is evicted


def test_non_preemptible_is_never_evicted() -> None:
    """A non-preemptible incumbent keeps its GPU whatever the newcomer offers."""
    nodes = _one_node(Gpu(0, "T4"))
    inc = Incumbent("old", "o", 1, (Placement("n1", (0,)),), preemptible=False)
    bids = (_bid("new", Alternative(1000, Unit("whole"))),)
    alloc = _solve(Problem(nodes, RICH, bids, (inc,)))
    assert not alloc.evicted and not alloc.winners


def test_evicting_a_mig_incumbent_frees_its_slices() -> None:
    """Evicting a MIG incumbent frees its slices for a profile that needs them."""
    gpu = Gpu(0, "H100-80GB", "mig")
    inc = Incumbent("old", "o", 2, (Placement("n1", (0,), "3g.40gb", 0),))
    bids = (_bid("new", Alternative(5, Unit("mig", profile="7g.80gb"))),)
    alloc = _solve(Problem(_one_node(gpu), RICH, bids, (inc,)))
    assert alloc.evicted == {0} and alloc.stats["objective"] == pytest.approx(3)


def test_shared_gpu_serves_a_whole_unit_only_when_empty() -> None:
    """A shared GPU with a share on it cannot host a whole unit; an empty one can."""
    used = Gpu(0, "T4", "shared", used_milli=100)
    free = Gpu(1, "T4", "shared")
    bids = (
        _bid("w", Alternative(5, Unit("whole"), replicas=2)),
        _bid("s", Alternative(1, Unit("share", milli=900))),
    )
    alloc = _solve(Problem(_one_node(used, free), RICH, bids))
    assert set(alloc.winners) == {1}
    assert alloc.winners[1][1][0].gpus == (0,)


def test_shares_are_packed_per_gpu() -> None:
    """Three 600-milli shares need three GPUs: the sum fits two GPUs but no GPU holds two."""
    nodes = _one_node(Gpu(0, "T4", "shared"), Gpu(1, "T4", "shared"))
    bids = (_bid("s", Alternative(5, Unit("share", milli=600), replicas=3)),)
    alloc = _solve(Problem(nodes, RICH, bids))
    assert not alloc.winners


def test_locality_keeps_gangs_together() -> None:
    """node/nvlink/rack/gpu locality keep a gang in one place and fail when none is big enough."""
    nodes = (
        Node("n1", gpus=(Gpu(0, "T4", nvlink="x"), Gpu(1, "T4", nvlink="y")), rack="r1"),
        Node("n2", gpus=(Gpu(0, "T4"), Gpu(1, "T4")), rack="r2"),
        Node("n3", gpus=(Gpu(0, "T4", "shared"),), rack="r2"),
    )
    cases = [
        (Alternative(1, Unit("whole"), replicas=3, locality="node"), False),
        (Alternative(1, Unit("whole"), replicas=3, locality="rack"), True),
        (Alternative(1, Unit("whole"), replicas=4, locality="rack"), False),
        (Alternative(1, Unit("whole"), replicas=2, locality="nvlink"), True),
        (Alternative(1, Unit("whole"), replicas=5, locality="any"), True),
        (Alternative(1, Unit("share", milli=300), replicas=3, locality="gpu"), True),
        (Alternative(1, Unit("share", milli=400), replicas=3, locality="gpu"), False),
    ]
    for alt, wins in cases:
        alloc = _solve(Problem(nodes, RICH, (_bid("a", alt),)))
        assert bool(alloc.winners) is wins, alt
        if alt.locality == "nvlink" and wins:
            assert alloc.winners[0][1][0].node == "n2"


def test_one_model_and_filters() -> None:
    """All GPUs of an alternative are one model; models/min memory filters are honoured."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "L4"), Gpu(2, "L4"))
    alloc = _solve(Problem(nodes, RICH, (_bid("a", Alternative(1, Unit("whole"), replicas=3)),)))
    assert not alloc.winners
    alt = Alternative(1, Unit("whole"), replicas=2, min_gpu_memory_gb=20)
    alloc = _solve(Problem(nodes, RICH, (_bid("a", alt),)))
    assert {p.gpus for p in alloc.winners[0][1]} == {(1,), (2,)}
    alt = Alternative(1, Unit("whole"), models=("Tesla-T4",))
    alloc = _solve(Problem(nodes, RICH, (_bid("a", alt),)))
    assert alloc.winners[0][1][0].gpus == (0,)


def test_reserve_price_excludes_cheap_alternatives() -> None:
    """An alternative below the reserve per GPU-equivalent of a model cannot use that model."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "L4"))
    bids = (_bid("a", Alternative(3, Unit("whole"), replicas=1)),)
    alloc = _solve(Problem(nodes, RICH, bids, reserve_prices={"T4": 4, "L4": 2}))
    assert alloc.winners[0][1][0].gpus == (1,)
    alloc = _solve(Problem(nodes, RICH, bids, reserve_prices={"T4": 4, "L4": 4}))
    assert not alloc.winners


def test_multi_gpu_replicas_and_cpu_per_replica() -> None:
    """A replica's k GPUs come from one node, and CPU is charged once per replica."""
    nodes = (
        Node("a", cpu_milli=2000, gpus=(Gpu(0, "T4"), Gpu(1, "T4"), Gpu(2, "T4"))),
        Node("b", cpu_milli=2000, gpus=(Gpu(0, "T4"),)),
    )
    alt = Alternative(1, Unit("whole", gpus=2), replicas=2)
    assert not _solve(Problem(nodes, RICH, (_bid("x", alt),))).winners
    alt = Alternative(1, Unit("whole", gpus=1), replicas=3, cpu_milli=1000)
    alloc = _solve(Problem(nodes, RICH, (_bid("x", alt),)))
    assert sorted(p.node for p in alloc.winners[0][1]) == ["a", "a", "b"]


def test_identical_gpus_are_counted_and_decoded() -> None:
    """On 16 identical MIG GPUs in one group, 40 x 1g + 8 x 3g are decoded to legal slots."""
    nodes = _one_node(*(Gpu(i, "A100-SXM4-80GB", "mig") for i in range(16)))
    bids = (
        _bid("a", Alternative(40, Unit("mig", profile="1g.10gb"), replicas=40)),
        _bid("b", Alternative(8, Unit("mig", profile="3g.40gb"), replicas=8)),
        _bid("c", Alternative(1, Unit("mig", profile="7g.80gb"), replicas=11)),
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    assert set(alloc.winners) == {0, 1}
    assert alloc.stats["resources"] == 1


def test_warm_start_is_accepted_and_kept_or_improved() -> None:
    """A feasible warm start is used as a hint and the result is at least as good."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "T4"))
    bids = (_bid("a", Alternative(3, Unit("whole"))), _bid("b", Alternative(4, Unit("whole"))))
    warm = Allocation({0: (0, (Placement("n1", (0,)),))})
    alloc = _solve(Problem(nodes, RICH, bids), warm)
    assert welfare(Problem(nodes, RICH, bids), alloc) == pytest.approx(7)


def test_invalid_arguments_name_the_argument() -> None:
    """Bad time limits, seeds, workers and warm starts raise ProblemError naming them."""
    problem = Problem(_one_node(Gpu(0, "T4")), RICH, (_bid("a", Alternative(1, Unit("whole"))),))
    bad: list[tuple[dict[str, object], str]] = [
        ({"time_limit": 0.0}, "time_limit"),
        ({"time_limit": float("nan")}, "time_limit"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"warm_start": Allocation({5: (0, ())})}, "warm_start"),
    ]
    for override, name in bad:
        kwargs: dict[str, object] = {"warm_start": None, "time_limit": 1.0, "seed": 0}
        kwargs.update(override)
        with pytest.raises(ProblemError) as err:
            solve_cpsat(problem, **kwargs)  # type: ignore[arg-type]
        assert err.value.path == name


def test_stats_report_status_bound_gap_and_size() -> None:
    """The stats carry status, objective, bound, gap, time and model size."""
    problem = Problem(_one_node(Gpu(0, "T4")), RICH, (_bid("a", Alternative(2, Unit("whole"))),))
    stats = _solve(problem).stats
    assert stats["objective"] == pytest.approx(2) and stats["bound"] == pytest.approx(2)
    assert stats["gap"] == 0 and stats["time_ms"] > 0
    assert stats["variables"] > 0 and stats["constraints"] > 0


def test_mig_layouts_are_pareto_maximal() -> None:
    """Layout enumeration keeps only maximal count vectors (4 x 1g + 3g@4, not 3 x 1g + 3g)."""
    model = CATALOG["H100-80GB"]
    layouts = dict(mig_layouts(model, [], [("1g.10gb", 1), ("3g.40gb", 1), ("4g.40gb", 1)]))
    assert (7, 0, 0) in layouts and (0, 1, 1) in layouts and (0, 2, 0) in layouts
    assert (4, 1, 0) in layouts and (3, 0, 1) in layouts
    assert (3, 1, 0) not in layouts and (1, 2, 0) not in layouts
    bundles = dict(mig_layouts(model, [], [("1g.10gb", 1), ("1g.10gb", 3)]))
    assert set(bundles) == {(7, 0), (4, 1), (1, 2)}


# --------------------------------------------------------------------------- brute force
@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_on_tiny_random_rounds(seed: int) -> None:
    """On tiny random rounds, CP-SAT's proven optimum equals exhaustive search, and it is valid."""
    problem = random_problem(random.Random(seed))
    alloc = _solve(problem)
    assert welfare(problem, alloc) == pytest.approx(alloc.stats["objective"])
    assert alloc.stats["objective"] == pytest.approx(brute_force(problem))


@pytest.mark.parametrize("seed", range(20))
def test_same_shape_bids_on_rich_wallets_match_brute_force(seed: int) -> None:
    """With wallets that cover every bid, one-alternative bids of one shape are ordered by value
    (a dominance rule); the optimum must still equal exhaustive search, ties included."""
    rng = random.Random(1000 + seed)
    base = random_problem(rng)
    bids = list(base.bids)
    for b in base.bids:
        if len(b.alternatives) == 1:
            a = b.alternatives[0]
            for k, value in enumerate((a.value, max(1.0, a.value - rng.randint(0, 3)))):
                alt = Alternative(
                    value, a.unit, a.replicas, a.cpu_milli, a.memory_mib, a.models,
                    a.min_gpu_memory_gb, a.locality,
                )  # fmt: skip
                bids.append(Bid(f"{b.id}-copy{k}", f"{b.bidder}-copy{k}", b.wallet, (alt,)))
    wallets = (Wallet("w1", 1e6), Wallet("w2", 1e6))
    problem = Problem(base.nodes, wallets, tuple(bids[:6]), base.incumbents, base.reserve_prices)
    alloc = _solve(problem)
    assert welfare(problem, alloc) == pytest.approx(alloc.stats["objective"])
    assert alloc.stats["objective"] == pytest.approx(brute_force(problem))


@pytest.mark.parametrize("seed", range(20))
def test_same_shape_bids_on_tight_wallets_match_brute_force(seed: int) -> None:
    """The same with wallets that may run out: budget rows come and go between phases and the
    order holds only where a swap cannot overspend; the optimum still equals exhaustive search."""
    rng = random.Random(2000 + seed)
    base = random_problem(rng)
    bids = list(base.bids)
    for b in base.bids:
        if len(b.alternatives) == 1:
            a = b.alternatives[0]
            for k in range(2):
                alt = dataclasses.replace(a, value=max(1.0, a.value - rng.randint(0, 3)))
                wallet = rng.choice(["w1", "w2"])
                bids.append(Bid(f"{b.id}-copy{k}", f"{b.bidder}-copy{k}", wallet, (alt,)))
    wallets = (Wallet("w1", float(rng.randint(3, 12))), Wallet("w2", 1e6))
    problem = Problem(base.nodes, wallets, tuple(bids[:6]), base.incumbents, base.reserve_prices)
    alloc = _solve(problem)
    assert welfare(problem, alloc) == pytest.approx(alloc.stats["objective"])
    assert alloc.stats["objective"] == pytest.approx(brute_force(problem))


def test_same_shape_bids_dearest_win() -> None:
    """Four identical one-GPU bids on two GPUs (rich wallet): the two dearest win."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "T4"))
    bids = tuple(
        _bid(f"b{k}", Alternative(v, Unit("whole"))) for k, v in enumerate((3.0, 5.0, 4.0, 5.0))
    )
    alloc = _solve(Problem(nodes, RICH, bids))
    assert alloc.stats["objective"] == pytest.approx(10.0)
    assert set(alloc.winners) == {1, 3}


def test_warm_start_hint_is_completed() -> None:
    """A warm start (choices only) is completed into a hint on every variable."""
    from allocator.instances import random_problem as mixed_round
    from allocator.solvers.cpsat import _Builder

    problem = mixed_round(1, gpus=16, bids=40)
    best = _solve(problem)
    builder = _Builder(problem)
    builder.build()
    builder.hint(Allocation(best.winners, best.evicted))
    builder.complete_hint(5.0)
    proto = builder.m.proto
    assert len(proto.solution_hint.vars) == len(proto.variables)


# --------------------------------------------------------------------------- VCG
def test_vcg_textbook_two_bidders() -> None:
    """One GPU, bids 10 and 7: the winner pays the loser's 7 (second price), the loser nothing."""
    nodes = _one_node(Gpu(0, "T4"))
    bids = (_bid("a", Alternative(10, Unit("whole"))), _bid("b", Alternative(7, Unit("whole"))))
    problem = Problem(nodes, RICH, bids)
    alloc = _solve(problem)
    assert set(alloc.winners) == {0}
    assert vcg_payments(problem, alloc, time_limit=5, seed=0) == {0: pytest.approx(7)}


def test_vcg_complements() -> None:
    """Single-GPU bidders 4 and 5 beat a 2-GPU bid of 8; each pays 8 minus the other's value."""
    nodes = _one_node(Gpu(0, "T4"), Gpu(1, "T4"))
    bids = (
        _bid("a", Alternative(4, Unit("whole"))),
        _bid("b", Alternative(5, Unit("whole"))),
        _bid("c", Alternative(8, Unit("whole"), replicas=2)),
    )
    problem = Problem(nodes, RICH, bids)
    alloc = _solve(problem)
    pay = vcg_payments(problem, alloc, time_limit=5, seed=0)
    assert pay == {0: pytest.approx(3), 1: pytest.approx(4)}


def test_vcg_warns_when_not_proven_optimal() -> None:
    """VCG on an allocation not proven optimal says so with a RuntimeWarning."""
    problem = Problem(_one_node(Gpu(0, "T4")), RICH, (_bid("a", Alternative(2, Unit("whole"))),))
    alloc = _solve(problem)
    stale = Allocation(alloc.winners, alloc.evicted, {"status": "FEASIBLE"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vcg_payments(problem, stale, time_limit=5, seed=0)
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)


@pytest.mark.parametrize("seed", range(3))
def test_mid_size_rounds_are_valid_and_proven(seed: int) -> None:
    """On 16-GPU, 40-bid mixed rounds the solver proves optimality and its placements are valid."""
    from allocator.instances import random_problem as mixed_round

    problem = mixed_round(seed, gpus=16, bids=40)
    alloc = solve_cpsat(problem, warm_start=None, time_limit=20.0, seed=0)
    assert alloc.stats["status"] == "OPTIMAL" and alloc.stats["gap"] == 0
    assert violations(problem, alloc) == []
    assert welfare(problem, alloc) == pytest.approx(alloc.stats["objective"])


def test_tiny_time_limit_still_returns_a_valid_allocation() -> None:
    """Out of time, the solver returns a valid allocation (at worst the warm start) and its gap."""
    from allocator.instances import random_problem as mixed_round

    problem = mixed_round(0, gpus=32, bids=100)
    alloc = solve_cpsat(problem, warm_start=Allocation({}), time_limit=1e-3, seed=0)
    assert alloc.stats["status"] in ("OPTIMAL", "FEASIBLE", "UNKNOWN")
    assert violations(problem, alloc) == []
    assert alloc.stats["bound"] >= alloc.stats["objective"] - 1e-6 and alloc.stats["gap"] >= 0


def test_vcg_never_charges_below_the_reserve() -> None:
    """A lone bidder's VCG payment is 0, so it pays the reserve price of what it won instead."""
    from allocator import solve
    from allocator.model import Alternative, Bid, Gpu, Node, Problem, Unit, Wallet

    problem = Problem(
        nodes=(Node("n", 8000, 64000, (Gpu(0, "T4"), Gpu(1, "T4"))),),
        wallets=(Wallet("w", 100.0),),
        bids=(Bid("b", "a", "w", (Alternative(50.0, Unit("whole", gpus=2)),)),),
        reserve_prices={"T4": 20.0},
    )
    result = solve(problem, solver="cpsat", payments="vcg", time_limit=5.0)
    assert [(w.bid_id, w.payment) for w in result.winners] == [("b", 40.0)]
