"""Built-in example rounds, used by ``gpu-allocator demo``, the docs and the tests."""

from __future__ import annotations

from allocator.model import (
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    Node,
    Placement,
    Problem,
    Unit,
    Wallet,
)

__all__ = ["demo_problem"]


def demo_problem() -> Problem:
    """A mixed A100/H100 cluster and three agents competing for it.

    - ``a100-mig``: 4 x A100-SXM4-80GB in MIG mode (one already holds an outside 3g.40gb@4).
    - ``a100-share``: 2 A100 time-sliced for fractional shares (one 40% used outside) and 2 whole.
    - ``h100-0``: 8 x H100-80GB in two NVLink domains of four; a research sweep (the incumbent)
      holds domain ``nv0``.
    - Agents: ``chat-inference`` (production, large wallet) wants 4 NVLinked H100s now, plus MIG
      slices for its smaller models; ``research`` (medium wallet) wants a 4-GPU NVLink gang and
      whole GPUs; ``notebooks`` (small wallet) wants fractional shares.

    The inference gang is worth more than the sweep (value + preemption cost), so the sweep
    is preempted; the research 8-GPU alternative is over its wallet.
    """
    nodes = (
        Node(
            "a100-mig",
            cpu_milli=64_000,
            memory_mib=512_000,
            rack="r1",
            zone="z1",
            gpus=tuple(Gpu(i, "A100-SXM4-80GB", "mig", mig_instances=()) for i in range(4)),
        ),
        Node(
            "a100-share",
            cpu_milli=64_000,
            memory_mib=512_000,
            rack="r1",
            zone="z1",
            gpus=(
                Gpu(0, "A100-SXM4-80GB", "shared", used_milli=400),
                Gpu(1, "A100-SXM4-80GB", "shared"),
                Gpu(2, "A100-SXM4-80GB", "whole"),
                Gpu(3, "A100-SXM4-80GB", "whole"),
            ),
        ),
        Node(
            "h100-0",
            cpu_milli=128_000,
            memory_mib=1_024_000,
            rack="r2",
            zone="z1",
            gpus=tuple(
                Gpu(i, "H100-80GB", "whole", nvlink="nv0" if i < 4 else "nv1") for i in range(8)
            ),
        ),
    )
    wallets = (
        Wallet("chat-inference", 10_000),
        Wallet("research", 2_500),
        Wallet("notebooks", 400),
    )

    def whole(gpus: int) -> Unit:
        return Unit("whole", gpus=gpus)

    def mig(profile: str) -> Unit:
        return Unit("mig", profile=profile)

    bids = (
        Bid(
            "chat-h100-gang",
            "chat-inference",
            "chat-inference",
            (
                Alternative(
                    4_000,
                    whole(1),
                    replicas=4,
                    cpu_milli=8_000,
                    locality="nvlink",
                    models=("H100-80GB",),
                ),
            ),
        ),
        Bid(
            "chat-small-models",
            "chat-inference",
            "chat-inference",
            (
                Alternative(900, mig("3g.40gb"), replicas=3, cpu_milli=4_000),
                Alternative(700, whole(1), replicas=2, cpu_milli=4_000),
            ),
        ),
        Bid(
            "chat-embeddings",
            "chat-inference",
            "chat-inference",
            (Alternative(400, mig("1g.10gb"), replicas=4, cpu_milli=1_000, locality="node"),),
        ),
        Bid(
            "research-pretrain",
            "research",
            "research",
            (
                Alternative(3_000, whole(8), cpu_milli=32_000, locality="node"),
                Alternative(1_800, whole(1), replicas=4, cpu_milli=8_000, locality="nvlink"),
            ),
        ),
        Bid(
            "research-eval",
            "research",
            "research",
            (Alternative(500, whole(1), replicas=2, cpu_milli=4_000, locality="node"),),
        ),
        Bid(
            "research-ablation",
            "research",
            "research",
            (Alternative(350, mig("4g.40gb"), replicas=2, cpu_milli=4_000),),
        ),
        *(
            Bid(
                f"notebook-{i}",
                "notebooks",
                "notebooks",
                (Alternative(60 + 10 * i, Unit("share", milli=250), cpu_milli=2_000),),
            )
            for i in range(6)
        ),
        Bid(
            "notebook-big",
            "notebooks",
            "notebooks",
            (Alternative(500, Unit("share", milli=500), cpu_milli=2_000),),
        ),
    )
    incumbents = (
        Incumbent(
            "research-old-sweep",
            "research",
            value=600,
            preemption_cost=200,
            cpu_milli=4_000,
            placements=tuple(Placement("h100-0", (i,)) for i in range(4)),
            wallet="research",
        ),
        Incumbent(
            "chat-legacy",
            "chat-inference",
            value=300,
            preemptible=False,
            cpu_milli=2_000,
            placements=(Placement("a100-mig", (0,), mig_profile="3g.40gb", mig_start=4),),
            wallet="chat-inference",
        ),
    )
    return Problem(
        nodes=nodes,
        wallets=wallets,
        bids=bids,
        incumbents=incumbents,
        reserve_prices={"A100-SXM4-80GB": 50.0, "H100-80GB": 80.0},
        round_id="demo-round-1",
    )
