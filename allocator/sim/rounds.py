"""An auction round of the simulator as the engine's Problem and Result, for ``verify``.

The simulator clears rounds on its own compact state (C++), so the round's Problem and Result
are rebuilt here from that state: every GPU is offered shared (a whole-GPU pod takes a free
one), with the milli used before the round as outside usage and the nodes' free CPU and memory
as what the round may sell; each GPU pod of the round is a bid (one wallet that never binds).
``allocator.verify`` then checks the simulator's placements independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    Loss,
    Node,
    Placement,
    Problem,
    Result,
    Unit,
    Wallet,
    Winner,
)
from allocator.model.catalog import whole_gpu_model
from allocator.sim.traces import ClusterTrace, PodTrace

__all__ = ["round_problem_and_result"]


def round_problem_and_result(
    cluster: ClusterTrace,
    gpu_free_after: np.ndarray,
    cpu_free_after: np.ndarray,
    mem_free_after: np.ndarray,
    pods: PodTrace,
    round_pods: Sequence[int],
    values: Sequence[float],
    placements: Sequence[tuple[int, list[int]] | None],
    round_id: str,
) -> tuple[Problem, Result]:
    """The Problem the round faced and the Result the simulator applied.

    ``*_free_after`` is the simulator's state after the round; the state before is rebuilt by
    giving back what the round placed. ``pods`` is the pod table in arrival order (row i is the
    i-th arrival), ``placements[k]`` where ``round_pods[k]`` went (node, global GPU indices).
    """
    first = np.concatenate([[0], np.cumsum(cluster.gpus)]).astype(np.int64)
    gpu_free = np.array(gpu_free_after, dtype=np.int64)
    cpu_free = np.array(cpu_free_after, dtype=np.int64)
    mem_free = np.array(mem_free_after, dtype=np.int64)
    for i, where in zip(round_pods, placements, strict=True):
        if where is None:
            continue
        node, gpus = where
        cpu_free[node] += int(pods.cpu_milli[i])
        mem_free[node] += int(pods.memory_mib[i])
        for g in gpus:
            gpu_free[g] += int(pods.milli[i])
    nodes: list[Node] = []
    for n, name in enumerate(cluster.names):
        node_gpus = tuple(
            Gpu(
                index=g - int(first[n]),
                model=cluster.models[int(cluster.model[n])],
                mode="shared",
                used_milli=1000 - int(gpu_free[g]),
            )
            for g in range(int(first[n]), int(first[n + 1]))
        )
        nodes.append(
            Node(
                name=name,
                cpu_milli=int(cpu_free[n]),
                memory_mib=int(mem_free[n]),
                gpus=node_gpus,
            )
        )
    extra = tuple(whole_gpu_model(m, 16.0) for m in cluster.models if m not in CATALOG)
    bids, winners, losers = [], [], []
    total = 1.0 + float(sum(values))
    for k, (i, where) in enumerate(zip(round_pods, placements, strict=True)):
        n_gpu, milli = int(pods.gpus[i]), int(pods.milli[i])
        if n_gpu == 0:
            continue  # CPU-only pods are not bids (placed by the simulator's FGD score)
        unit = Unit("whole", gpus=n_gpu) if milli >= 1000 else Unit("share", milli=milli)
        mask = int(pods.models[i])
        models = tuple(m for b, m in enumerate(cluster.models) if mask >> b & 1) if mask else ()
        if mask and not models:
            continue  # allowed models absent from the cluster: the engine never sees it
        bid_id = f"pod-{i}"
        value = float(values[k])
        bids.append(
            Bid(
                id=bid_id,
                bidder=bid_id,
                wallet="sim",
                alternatives=(
                    Alternative(
                        value=value,
                        unit=unit,
                        cpu_milli=int(pods.cpu_milli[i]),
                        memory_mib=int(pods.memory_mib[i]),
                        models=models,
                    ),
                ),
            )
        )
        if where is None:
            losers.append(Loss(bid_id, "does_not_fit"))
            continue
        node, gpus = where
        placement = Placement(
            node=cluster.names[node],
            gpus=tuple(sorted(g - int(first[node]) for g in gpus)),
            milli=milli if milli < 1000 else 0,
        )
        winners.append(Winner(bid_id, 0, value, value, (placement,)))
    problem = Problem(
        nodes=tuple(nodes),
        wallets=(Wallet("sim", total),),
        bids=tuple(bids),
        extra_models=extra,
        round_id=round_id,
    )
    welfare = sum(w.value for w in winners)
    result = Result(
        round_id=round_id,
        solver="greedy",
        payment_rule="first-price",
        status="feasible",
        winners=tuple(winners),
        evicted=(),
        losers=tuple(losers),
        welfare=welfare,
        revenue=welfare,
    )
    return problem, result
