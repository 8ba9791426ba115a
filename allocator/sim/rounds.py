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
    nodes = _nodes_before(
        cluster,
        first,
        *_free_before(gpu_free_after, cpu_free_after, mem_free_after, pods, round_pods, placements),
    )
    extra = tuple(whole_gpu_model(m, 16.0) for m in cluster.models if m not in CATALOG)
    bids, winners, losers = [], [], []
    for k, (i, where) in enumerate(zip(round_pods, placements, strict=True)):
        bid = _bid(cluster, pods, i, float(values[k]))
        if bid is None:
            continue
        bids.append(bid)
        if where is None:
            losers.append(Loss(bid.id, "does_not_fit"))
            continue
        node, gpus = where
        milli = int(pods.milli[i])
        placement = Placement(
            node=cluster.names[node],
            gpus=tuple(sorted(g - int(first[node]) for g in gpus)),
            milli=milli if milli < 1000 else 0,
        )
        value = bid.alternatives[0].value
        winners.append(Winner(bid.id, 0, value, value, (placement,)))
    problem = Problem(
        nodes=nodes,
        wallets=(Wallet("sim", 1.0 + float(sum(values))),),
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


def _free_before(
    gpu_free_after: np.ndarray,
    cpu_free_after: np.ndarray,
    mem_free_after: np.ndarray,
    pods: PodTrace,
    round_pods: Sequence[int],
    placements: Sequence[tuple[int, list[int]] | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free GPU milli, CPU and memory before the round: what the round placed given back."""
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
    return gpu_free, cpu_free, mem_free


def _nodes_before(
    cluster: ClusterTrace,
    first: np.ndarray,
    gpu_free: np.ndarray,
    cpu_free: np.ndarray,
    mem_free: np.ndarray,
) -> tuple[Node, ...]:
    """The cluster before the round: every GPU shared, what was used as outside usage, the
    nodes' free CPU and memory as what the round may sell."""
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
    return tuple(nodes)


def _bid(cluster: ClusterTrace, pods: PodTrace, i: int, value: float) -> Bid | None:
    """Pod ``i`` as the round's bid, or None where the engine never saw it: CPU-only pods (placed
    by the simulator's FGD score) and pods whose allowed models are absent from the cluster."""
    n_gpu, milli = int(pods.gpus[i]), int(pods.milli[i])
    if n_gpu == 0:
        return None
    unit = Unit("whole", gpus=n_gpu) if milli >= 1000 else Unit("share", milli=milli)
    mask = int(pods.models[i])
    models = tuple(m for b, m in enumerate(cluster.models) if mask >> b & 1) if mask else ()
    if mask and not models:
        return None
    bid_id = f"pod-{i}"
    return Bid(
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
