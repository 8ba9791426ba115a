"""Seeded random rounds and the spot-gpu production fleet, for benchmarks and property tests.

``random_problem`` draws a small mixed cluster (MIG, whole and shared GPUs; NVLink domains,
racks) with bids of every unit kind, gangs, wallets and incumbents. ``spot_gpu_nodes`` reads
the node list of Alibaba's 2026 spot-gpu trace (``cluster-trace-v2026-spot-gpu``, ASPLOS'26).
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    GpuModel,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    ProblemError,
    Unit,
    Wallet,
    whole_gpu_model,
)

__all__ = [
    "QUALITY_SIZES",
    "SPOT_GPU_EXTRA_MODELS",
    "fleet_problem",
    "quality_problem",
    "random_bids",
    "random_problem",
    "spot_gpu_nodes",
]

#: The spot-gpu trace names two anonymised models; we treat them as whole/shared 32 GB GPUs
#: (their memory is not published: an assumption, stated in docs/benchmarks.md).
SPOT_GPU_EXTRA_MODELS = (
    whole_gpu_model("GPU-series-1", 32),
    whole_gpu_model("GPU-series-2", 32),
)
_MIG_MODELS = {"A100-SXM4-80GB", "A800-SXM4-80GB", "H800"}
_PROFILES_80GB = ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")


def spot_gpu_nodes(path: str | Path, gpus: int | None = None) -> tuple[Node, ...]:
    """Nodes of the spot-gpu node list, in file order, up to ``gpus`` GPUs in all.

    MIG-capable models (A100, A800, H800) get every third node in MIG mode and the rest whole;
    other models alternate whole and shared by node. Each 8-GPU node has two NVLink domains of
    four; racks group 16 consecutive nodes; memory is 8 GiB per CPU (the file has no memory).
    """
    out: list[Node] = []
    total = 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ProblemError("nodes", f"cannot read {path}: {e.strerror}") from None
    for i, row in enumerate(rows):
        try:
            model = row["gpu_model"]
            count = int(row["gpu_capacity_num"])
            cpus = int(row["cpu_num"])
        except (KeyError, ValueError) as e:
            raise ProblemError(f"{path}:{i + 2}", f"bad row: {e}") from None
        if gpus is not None and total + count > gpus:
            break
        if model in _MIG_MODELS:
            mode = "mig" if i % 3 == 0 else "whole"
        else:
            mode = "shared" if i % 2 else "whole"
        out.append(
            Node(
                name=f"spot-{row['node_name']}",
                cpu_milli=cpus * 1000,
                memory_mib=cpus * 8 * 1024,
                rack=f"rack-{i // 16}",
                zone=f"zone-{i // 512}",
                gpus=tuple(
                    Gpu(k, model, mode, nvlink=f"nv{k // 4}" if count == 8 else None)
                    for k in range(count)
                ),
            )
        )
        total += count
    return tuple(out)


def _unit_for(rng: random.Random, modes: set[str]) -> tuple[Unit, str]:
    kinds = []
    if "mig" in modes:
        kinds += ["mig"] * 3
    if "shared" in modes:
        kinds += ["share"] * 3
    if modes & {"whole", "shared"}:
        kinds += ["whole"] * 4
    kind = rng.choice(kinds)
    if kind == "mig":
        return Unit("mig", profile=rng.choice(_PROFILES_80GB)), kind
    if kind == "share":
        return Unit("share", milli=rng.choice((100, 200, 250, 300, 500, 700))), kind
    return Unit("whole", gpus=rng.choice((1, 1, 1, 2, 4, 8))), kind


def _equivalents(unit: Unit, replicas: int) -> float:
    if unit.kind == "whole":
        return float(unit.gpus * replicas)
    if unit.kind == "share":
        return unit.milli / 1000 * replicas
    compute = int((unit.profile or "1g").split("g", 1)[0])
    return compute / 7 * replicas


def random_bids(
    rng: random.Random,
    count: int,
    wallets: int,
    modes: set[str],
    *,
    alternatives: int = 2,
    gang_max: int = 4,
) -> tuple[tuple[Bid, ...], tuple[Wallet, ...]]:
    """``count`` random bids over ``wallets`` agents, units drawn from the GPU ``modes`` present.

    Values are lognormal per GPU-equivalent with an agent-specific level (inference agents bid
    high, research agents low). Wallet balances cover about half of what each agent bids.
    """
    level = [rng.choice((1.0, 1.0, 3.0)) for _ in range(wallets)]
    asked = [0.0] * wallets
    bids = []
    for i in range(count):
        w = rng.randrange(wallets)
        alts = []
        for _ in range(rng.randint(1, alternatives)):
            unit, _kind = _unit_for(rng, modes)
            replicas = rng.randint(1, gang_max) if rng.random() < 0.3 else 1
            locality = "any"
            if replicas > 1 or unit.kind == "whole":
                locality = rng.choice(("any", "node", "nvlink", "rack"))
            if unit.kind == "whole" and unit.gpus * (replicas if locality == "nvlink" else 1) > 4:
                locality = "node" if replicas == 1 else "any"
            value = round(
                _equivalents(unit, replicas) * level[w] * 100 * math.exp(rng.gauss(0, 0.5)), 2
            )
            alts.append(
                Alternative(
                    value=value,
                    unit=unit,
                    replicas=replicas,
                    cpu_milli=rng.choice((0, 1000, 4000)),
                    memory_mib=rng.choice((0, 8192)),
                    locality=locality,
                )
            )
        asked[w] += max(a.value for a in alts)
        bids.append(Bid(f"b{i}", f"agent{w}", f"wallet{w}", tuple(alts)))
    wallet_list = tuple(
        Wallet(f"wallet{w}", round(asked[w] * rng.uniform(0.3, 0.8), 2)) for w in range(wallets)
    )
    return tuple(bids), wallet_list


def random_problem(
    seed: int,
    *,
    gpus: int = 32,
    bids: int = 60,
    wallets: int = 5,
    incumbents: int = 4,
    alternatives: int = 2,
) -> Problem:
    """A seeded random round on a mixed A100/H100 cluster of about ``gpus`` GPUs.

    Nodes have 8 GPUs (two NVLink domains of four) in one mode each: MIG, whole or shared;
    some MIG GPUs carry an outside instance. Incumbents hold whole GPUs, MIG slices or shares.
    """
    rng = random.Random(seed)
    nodes, modes_present = _random_nodes(rng, gpus)
    bid_list, wallet_list = random_bids(
        rng, bids, wallets, modes_present, alternatives=alternatives
    )
    incs = _random_incumbents(rng, nodes, incumbents, wallets)
    return Problem(
        nodes=tuple(nodes),
        wallets=wallet_list,
        bids=bid_list,
        incumbents=tuple(incs),
        reserve_prices={"A100-SXM4-80GB": 10.0},
        round_id=f"random-{seed}",
    )


#: (GPUs, bids) of the solver-quality rounds, cycled by seed (benchmarks/solver_quality.py).
QUALITY_SIZES = ((16, 50), (32, 100), (48, 150), (64, 200))


def quality_problem(seed: int) -> Problem:
    """Solver-quality round ``seed``: a ``random_problem`` of the size ``QUALITY_SIZES`` gives
    it, with six wallets and six incumbents (the rounds every payment and quality benchmark
    compares on)."""
    gpus, bids = QUALITY_SIZES[seed % len(QUALITY_SIZES)]
    return random_problem(seed, gpus=gpus, bids=bids, wallets=6, incumbents=6)


def fleet_problem(
    fleet: str | Path | tuple[Node, ...],
    bids: int,
    seed: int,
    *,
    gpus: int = 8000,
    agents: int = 200,
    round_id: str = "",
) -> Problem:
    """A fleet round: ``bids`` random bids (``random_bids``, seed ``seed``) of ``agents`` agents
    on the first ``gpus`` GPUs of the spot-gpu node list ``fleet`` (a path, or nodes already
    read by ``spot_gpu_nodes``), with the extra models those nodes need."""
    nodes = fleet if isinstance(fleet, tuple) else spot_gpu_nodes(fleet, gpus)
    modes = {g.mode for n in nodes for g in n.gpus}
    bid_list, wallets = random_bids(random.Random(seed), bids, agents, modes)
    return Problem(
        nodes=nodes,
        wallets=wallets,
        bids=bid_list,
        extra_models=extra_models_for(nodes),
        round_id=round_id or f"fleet-{len(nodes)}-{bids}-{seed}",
    )


def _random_nodes(rng: random.Random, gpus: int) -> tuple[list[Node], set[str]]:
    """About ``gpus`` GPUs in nodes of 8, each node in one mode; the modes present."""
    nodes: list[Node] = []
    n_nodes = max(1, gpus // 8)
    modes_present: set[str] = set()
    for k in range(n_nodes):
        mode = (
            ("mig", "whole", "shared")[k % 3]
            if n_nodes >= 3
            else rng.choice(("mig", "whole", "shared"))
        )
        modes_present.add(mode)
        model = "A100-SXM4-80GB" if mode != "whole" or k % 2 else "H100-80GB"
        node_gpus = []
        for j in range(8):
            outside: tuple[MigInstance, ...] = ()
            used = 0
            if mode == "mig" and rng.random() < 0.2:
                outside = (MigInstance("3g.40gb", 4),)
            if mode == "shared" and rng.random() < 0.3:
                used = rng.choice((200, 500))
            node_gpus.append(
                Gpu(j, model, mode, nvlink=f"nv{j // 4}", mig_instances=outside, used_milli=used)
            )
        nodes.append(
            Node(
                f"n{k}",
                cpu_milli=96_000,
                memory_mib=1_000_000,
                gpus=tuple(node_gpus),
                rack=f"r{k // 2}",
                zone="z0",
            )
        )
    return nodes, modes_present


def _random_incumbents(
    rng: random.Random, nodes: list[Node], incumbents: int, wallets: int
) -> list[Incumbent]:
    """Up to ``incumbents`` running workloads on free GPUs (a whole GPU, a MIG slice or a
    share), 80% of them preemptible."""
    incs: list[Incumbent] = []
    for i in range(incumbents):
        node = nodes[rng.randrange(len(nodes))]
        free = [g for g in node.gpus if not g.mig_instances and not g.used_milli]
        taken = {(p.node, gi) for x in incs for p in x.placements for gi in p.gpus}
        free = [g for g in free if (node.name, g.index) not in taken]
        if not free:
            continue
        g = rng.choice(free)
        if g.mode == "mig":
            place = Placement(node.name, (g.index,), mig_profile="3g.40gb", mig_start=0)
        elif g.mode == "shared":
            place = Placement(node.name, (g.index,), milli=500)
        else:
            place = Placement(node.name, (g.index,))
        incs.append(
            Incumbent(
                f"inc{i}",
                f"agent{i % wallets}",
                value=round(rng.uniform(20, 200), 2),
                placements=(place,),
                preemptible=rng.random() < 0.8,
                preemption_cost=round(rng.uniform(0, 50), 2),
                wallet=f"wallet{i % wallets}",
            )
        )
    return incs


def extra_models_for(nodes: tuple[Node, ...]) -> tuple[GpuModel, ...]:
    """The extra (non-catalog) models the spot-gpu fleet needs."""
    names = {g.model for n in nodes for g in n.gpus}
    return tuple(m for m in SPOT_GPU_EXTRA_MODELS if m.name in names)
