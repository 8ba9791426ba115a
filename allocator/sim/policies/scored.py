"""The one-pod-at-a-time policies of the openb replay: a node score each, in the C++ core.

Each pod is placed on arrival by ``SimCluster.place(pod, name)``: every feasible node gets an
integer score 0..100 and the best wins (ties: first node in the run's seeded order), or the pod
fails for good. The scores are those of the FGD authors' simulator and KAI's documented
bin-packing; docs/simulator.md has the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from allocator.sim.policies.registry import OpenbSetup, SimPlacement, register

if TYPE_CHECKING:
    from allocator import _core

__all__ = ["SCORED", "ScoredPolicy"]

#: The score policies of the C++ core, with what they prefer.
SCORED = {
    "random": "a feasible node drawn uniformly",
    "fifo": "the first feasible node (first fit)",
    "bestfit": "least CPU and GPU left after placement",
    "dotprod": "least alignment of free resources with the request",
    "gpupacking": "a shared GPU with room, then a partly used node, then an idle one",
    "fgd": "least growth of FGD's fragmentation (Weng et al., ATC'23)",
    "kai": "KAI Scheduler's bin-packing: the fullest node after placement",
    "pattern": "least loss of pattern value (shares), then FGD's growth with a CPU/memory reserve",
}


class ScoredPolicy:
    """Policy ``name`` of the C++ core, one pod at a time."""

    round_size = 1

    def __init__(self, name: str) -> None:
        self.name = name
        self.rounds = 0
        self.solver_seconds = 0.0

    def place(
        self, sim: _core.SimCluster, pods: Sequence[int], values: np.ndarray
    ) -> list[SimPlacement | None]:
        """Each pod on the best node by this policy's score (the values do not matter)."""
        return [sim.place(k, self.name) for k in pods]


def _factory(name: str) -> Callable[[OpenbSetup], ScoredPolicy]:
    def make(setup: OpenbSetup) -> ScoredPolicy:
        return ScoredPolicy(name)

    return make


for _name, _summary in SCORED.items():
    register(_name, "openb", _factory(_name), summary=_summary)
