"""Priced migration on openb: ``fgd-migrate``, ``pattern-migrate`` and ``auction-migrate``.

A variant of the experiment, reported apart from the online figures: a policy places pods as
its base does (``fgd``, ``pattern``, or the ``auction`` in its mode), and when a pod fits
nowhere it may move running pods (evict and re-place them, as a descheduler with a budget
would) so that the pod fits: the fewest moves that make room, found and applied by the C++ core
(``SimCluster.place_with_moves``, gpualloc/sim_migrate.hpp). The pod and the moved pods are
placed by the base's placement rule (``rule``: ``fgd``'s score, or the ``pattern`` rule's for
``pattern`` and for the auction with ``packing = "pattern"``). Moves are priced and budgeted:

* a pod worth ``v`` GPU-equivalents may cost at most ``floor(v / MOVE_PRICE)`` moves (and at
  most ``MAX_MOVES``), so a whole GPU is worth more moves than a small share;
* the run's moves never exceed ``MOVE_BUDGET`` of the pods placed so far (2%).

Every pod of at most ``MOVABLE_GPUS`` GPUs is movable (openb has no priorities; gangs of
several GPUs stay). The run reports the moves (``moves``), the pods placed only thanks to moves
(``rescued``) and their GPU-equivalents (``rescued_gpus``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from allocator.sim.policies.auction import OpenbAuction
from allocator.sim.policies.registry import OpenbPolicy, OpenbSetup, SimPlacement, register
from allocator.sim.policies.scored import ScoredPolicy

if TYPE_CHECKING:
    from allocator import _core

__all__ = ["MigrateOptions", "MigratingPolicy"]


@dataclass(frozen=True)
class MigrateOptions:
    """The price and budget of moves (defaults: the registered policies')."""

    #: GPU-equivalents one move costs: a pod worth v may cost floor(v / price) moves.
    move_price: float = 0.3
    #: Moves for one pod at most.
    max_moves: int = 3
    #: Moves over the run at most this fraction of the pods placed so far.
    budget: float = 0.02
    #: Pods of more GPUs are never moved.
    movable_gpus: int = 1
    #: Plans of the fewest moves compared (least FGD fragmentation after wins).
    candidates: int = 1
    #: Plans tried for real (released and re-placed) per pod at most: bounds the time.
    max_trials: int = 2000

    def __post_init__(self) -> None:
        if not self.move_price > 0:
            raise ValueError("move_price: must be > 0")
        if self.max_moves < 0:
            raise ValueError("max_moves: must be >= 0")
        if not 0 <= self.budget <= 1:
            raise ValueError("budget: must be in [0, 1]")
        if self.candidates < 1:
            raise ValueError("candidates: must be >= 1")


class MigratingPolicy:
    """``base``'s placements; a pod it leaves out is placed by moving running pods if the price
    and the budget allow. The pod and the moved pods are placed by the C++ core's score policy
    ``rule`` (the base's own rule: ``fgd`` or ``pattern``)."""

    def __init__(
        self, base: OpenbPolicy, options: MigrateOptions | None = None, rule: str = "fgd"
    ) -> None:
        self.base = base
        self.options = options or MigrateOptions()
        self.rule = rule
        self.round_size = base.round_size
        self.rounds = 0  # the base's, after each round
        self.solver_seconds = 0.0
        self.moves = 0
        self.placed = 0
        self.rescued = 0
        self.rescued_gpus = 0.0

    def allowed(self, value: float) -> int:
        """Moves pod of worth ``value`` may cost now (price, per-pod cap and budget)."""
        o = self.options
        by_price = int(value / o.move_price + 1e-9)
        left = int(o.budget * self.placed + 1e-9) - self.moves
        return max(0, min(o.max_moves, by_price, left))

    def place(
        self, sim: _core.SimCluster, pods: Sequence[int], values: np.ndarray
    ) -> list[SimPlacement | None]:
        got = self.base.place(sim, pods, values)
        self.rounds, self.solver_seconds = self.base.rounds, self.base.solver_seconds
        for j, k in enumerate(pods):
            if got[j] is None:
                allowed = self.allowed(float(values[j]))
                if allowed > 0:
                    res = sim.place_with_moves(
                        int(k),
                        self.rule,
                        max_moves=allowed,
                        max_pod_gpus=self.options.movable_gpus,
                        candidates=self.options.candidates,
                        max_trials=self.options.max_trials,
                    )
                    if res is not None:
                        got[j] = res[0]
                        self.moves += len(res[1])
                        self.rescued += 1
                        self.rescued_gpus += float(values[j])
            if got[j] is not None:
                self.placed += 1
        return got


def _scored(rule: str) -> Callable[[OpenbSetup], MigratingPolicy]:
    def make(setup: OpenbSetup) -> MigratingPolicy:
        return MigratingPolicy(ScoredPolicy(rule), rule=rule)

    return make


def _auction(setup: OpenbSetup) -> MigratingPolicy:
    return MigratingPolicy(OpenbAuction(setup), rule=setup.params.packing)


register(
    "fgd-migrate",
    "openb",
    _scored("fgd"),
    summary="fgd, and a pod that fits nowhere placed by moving running pods (priced, budgeted)",
    variant=True,
)
register(
    "pattern-migrate",
    "openb",
    _scored("pattern"),
    summary="pattern, and a pod that fits nowhere placed by moving running pods, all placed by "
    "the pattern rule (priced, budgeted)",
    variant=True,
)
register(
    "auction-migrate",
    "openb",
    _auction,
    per_mode=True,
    summary="the auction, and its losers placed by moving running pods (priced, budgeted)",
    variant=True,
)
