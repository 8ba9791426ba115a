"""The project's engine as a simulator policy, ``auction``, in both scenarios.

* openb: each GPU pod is a bid worth its GPU request in GPU-equivalents (one wallet that never
  binds, no reserve, no preemption), cleared by the C++ simulator's auction round on its own
  state (``SimCluster.auction_round``: the engine's greedy, optionally local search, with the
  trace's target workload for the packing); CPU-only pods are placed by FGD's score. Registered
  ``per_mode``: ``online`` clears a round per pod, ``batch`` a round every ``batch`` pods.
* mixed: a market (:class:`AuctionPolicy`): every pending job bids all its alternatives through
  :func:`allocator.solvers.solve`, wallets refilled per round, research work preemptible.

Both take their options from the run's :class:`~allocator.solvers.SolveParams`: ``solver``
(``greedy`` or ``local``), ``time_limit``, ``alpha``, ``packing``, and for openb
``fragment_scale`` and ``workload_hint`` (with ``packing="pattern"`` the hint also carries the
trace's pattern values); the seed of round ``k`` is the run's seed + ``params.seed`` + ``k``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from allocator import _core
from allocator.model import Bid, GpuModel, Incumbent, Node, Problem, Wallet
from allocator.sim.baselines import Decision
from allocator.sim.mixed import (
    _INFERENCE_VALUE,
    _RESEARCH_PREEMPTION_COST,
    _RESEARCH_VALUE,
    CLASSES,
    MixedPod,
    Workload,
)
from allocator.sim.policies.registry import MixedSetup, OpenbSetup, SimPlacement, register
from allocator.solvers import SolveParams, solve

__all__ = ["SIM_SOLVERS", "AuctionPolicy", "OpenbAuction"]

#: Solvers the simulator's auction runs (CP-SAT is out of reach at the simulator's sizes).
SIM_SOLVERS = ("greedy", "local")


def _check_params(params: SolveParams) -> None:
    if params.solver not in SIM_SOLVERS:
        raise ValueError(f"solver: must be greedy or local, got {params.solver!r}")


def _auction_round(
    sim: _core.SimCluster,
    pods: Sequence[int],
    values: np.ndarray,
    params: SolveParams,
    seed: int,
) -> list[SimPlacement | None]:
    """One auction round of the C++ simulator over ``pods`` (applied to ``sim``)."""
    return list(
        sim.auction_round(
            np.array(pods, dtype=np.int64),
            values,
            _core.SimAuctionOptions(
                engine=_core.EngineOptions(
                    alpha=params.alpha, fragment_scale=params.fragment_scale, packing=params.packing
                ),
                workload_hint=params.workload_hint,
                local_search=params.solver == "local",
                time_limit_s=params.time_limit,
                max_iterations=-1 if params.local_iterations is None else params.local_iterations,
                seed=seed,
            ),
        )
    )


class OpenbAuction:
    """The auction in the openb replay: a round of ``round_size`` pods at a time."""

    def __init__(self, setup: OpenbSetup) -> None:
        _check_params(setup.params)
        if setup.params.node_order:
            raise ValueError("node_order: the replay orders nodes by its seed; leave it empty")
        self.params = setup.params
        self.seed = setup.seed
        self.round_size = 1 if setup.mode == "online" else setup.batch
        self.rounds = 0
        self.solver_seconds = 0.0

    def place(
        self, sim: _core.SimCluster, pods: Sequence[int], values: np.ndarray
    ) -> list[SimPlacement | None]:
        """Clear one round over ``pods``; timed and counted."""
        t0 = time.perf_counter()
        seed = self.seed + self.params.seed + self.rounds
        got = _auction_round(sim, pods, values, self.params, seed)
        self.solver_seconds += time.perf_counter() - t0
        self.rounds += 1
        return got


class AuctionPolicy:
    """The project's market as a policy of the mixed scenario: every pending pod bids all its
    alternatives (the engine picks at most one), wallets refilled per round, research
    preemptible. ``params`` are the solve's options (solver greedy or local); round ``k`` is
    solved with seed ``seed + params.seed + k``; ``check`` verifies every round."""

    def __init__(
        self,
        workload: Workload,
        nodes: Sequence[Node],
        *,
        params: SolveParams,
        seed: int,
        check: bool,
    ) -> None:
        _check_params(params)
        self.params = params
        self.seed = seed
        self.check = check
        self.verified = 0
        self.revenue = 0.0
        # A wallet is a per-round budget (use it or lose it) on the value of new wins, by
        # priority: each agent's equal part of its class's level x the whole cluster, inference
        # 10x (never binding in practice), research 3x (binds only on a large research backlog).
        capacity = sum(len(n.gpus) for n in nodes)
        count = {k: sum(c == k for c in workload.agents.values()) for k in CLASSES}
        self.fund = {
            a: (10.0 * _INFERENCE_VALUE if k == "inference" else 3.0 * _RESEARCH_VALUE)
            * capacity
            / max(count[k], 1)
            for a, k in workload.agents.items()
        }
        self.balance = dict(self.fund)

    def __call__(
        self,
        nodes: tuple[Node, ...],
        extra_models: tuple[GpuModel, ...],
        pending: Sequence[MixedPod],
        running: Sequence[MixedPod],
        round_index: int,
    ) -> Decision:
        t0 = time.perf_counter()
        self.balance = dict(self.fund)
        problem = self._problem(nodes, extra_models, pending, running, round_index)
        seed = self.seed + self.params.seed + round_index
        result = solve(problem, params=self.params.replace(seed=seed))
        seconds = time.perf_counter() - t0
        if self.check:
            from allocator.verify import check_or_raise

            check_or_raise(problem, result)
            self.verified += 1
        self.revenue += result.revenue
        return Decision(
            {w.bid_id: w.placements for w in result.winners},
            tuple(result.evicted),
            1,
            seconds,
            chosen={w.bid_id: w.alternative for w in result.winners},
            verified=self.check,
        )

    def _problem(
        self,
        nodes: tuple[Node, ...],
        extra_models: tuple[GpuModel, ...],
        pending: Sequence[MixedPod],
        running: Sequence[MixedPod],
        round_index: int,
    ) -> Problem:
        """The round as the engine sees it: pending jobs bid, running ones are incumbents."""
        return Problem(
            nodes=nodes,
            wallets=tuple(Wallet(a, round(b, 6)) for a, b in self.balance.items()),
            bids=tuple(Bid(p.id, p.agent, p.agent, p.alternatives) for p in pending),
            incumbents=tuple(
                Incumbent(
                    p.id,
                    p.agent,
                    value=p.value,
                    placements=p.placements,
                    preemptible=p.klass == "research",
                    preemption_cost=(
                        _RESEARCH_PREEMPTION_COST * p.value if p.klass == "research" else 0.0
                    ),
                    wallet=p.agent,
                )
                for p in running
            ),
            extra_models=extra_models,
            round_id=f"mixed-{round_index}",
        )


def _mixed(setup: MixedSetup) -> AuctionPolicy:
    return AuctionPolicy(
        setup.workload, setup.nodes, params=setup.params, seed=setup.seed, check=setup.verify
    )


register(
    "auction",
    "openb",
    OpenbAuction,
    per_mode=True,
    summary="the engine's greedy over rounds of GPU pods (online: one pod, batch: --batch)",
)
register(
    "auction",
    "mixed",
    _mixed,
    summary="the market: wallets, all alternatives bid, research preemptible",
)
