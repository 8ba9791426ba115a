"""One registry for the policies of both simulator scenarios, and what a policy is.

A policy is registered under a name for a scenario: ``openb`` (the FGD experiment on a trace,
:func:`allocator.sim.replay.run_replay`), ``mixed`` (the mixed-priority scenario,
:func:`allocator.sim.mixed.run_mixed`) or ``mig-day`` (dynamic MIG over a day,
:func:`allocator.sim.migday.run_mig_day`). One name may have an implementation for each scenario
(``auction``, ``fifo`` and ``kai`` do). What is registered is a *factory*: given the run's setup
(its :class:`~allocator.solvers.SolveParams`, its seed, and what the scenario knows), it returns
the policy object for that run, which then decides round after round:

* :class:`OpenbPolicy`: given the cluster (``allocator._core.SimCluster``) and the pods of a round
  (indices into its pod table) with their values, it places them (the cluster applies each
  placement) and returns one placement ``(node, [global GPU indices])`` or ``None`` per pod.
* :class:`MixedPolicy`: given the fleet, the pending and the running jobs of a round, it returns
  a :class:`~allocator.sim.baselines.Decision` (jobs started and where, jobs evicted).
* :class:`MigDayPolicy`: gives every GPU of the fleet its layout at the start of the day, then
  before each round says which GPUs the engine may re-carve, which free instances it does not
  offer, and what a re-carving costs (a :class:`~allocator.sim.migday.MigPlan`); the scenario
  builds the round's Problem and calls the engine.

The built-in policies are the modules of this package (every module but this one), imported the
first time the registry is read; a new policy is one more module there that calls
:func:`register` (or any code that calls it before the run: a policy registered at run time is
seen by runs in this process and in processes forked from it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import numpy as np

from allocator.solvers import SolveParams

if TYPE_CHECKING:
    from allocator import _core
    from allocator.model import GpuModel, MigInstance, Node
    from allocator.sim.baselines import Decision
    from allocator.sim.migday import (
        MigDayConfig,
        MigDayWorkload,
        MigGpu,
        MigPlan,
        MigView,
    )
    from allocator.sim.mixed import MixedPod, Workload
    from allocator.sim.progress import ProgressEvent

__all__ = [
    "SCENARIOS",
    "MigDayPolicy",
    "MigDaySetup",
    "MixedPolicy",
    "MixedSetup",
    "OpenbPolicy",
    "OpenbSetup",
    "PolicyEntry",
    "SimPlacement",
    "get",
    "names",
    "register",
    "unregister",
]

#: The simulator's scenarios, as ``gpu-allocator simulate --scenario`` names them.
SCENARIOS = ("openb", "mixed", "mig-day")

#: Where the openb simulator put a pod: node index and global GPU indices (empty: CPU only).
SimPlacement = tuple[int, list[int]]


@dataclass(frozen=True)
class OpenbSetup:
    """What an openb policy is made with, once per run (trace, seed)."""

    #: The solve options (the engine's policies read them; the one-pod policies do not).
    params: SolveParams
    #: The run's seed (arrival order, node order; the auction adds it to its round seeds).
    seed: int
    #: ``online`` or ``batch`` (for a policy registered ``per_mode``: its rounds' size).
    mode: str = "online"
    #: Pods per round in batch mode.
    batch: int = 20


class OpenbPolicy(Protocol):
    """A policy of the openb replay, for one run.

    The replay hands it the pods in arrival order, ``round_size`` at a time (the last round may
    be shorter); the pods of a round count as not allocated until it returns.
    """

    #: Pods per decision (1: one pod at a time, as a scheduler that never waits).
    round_size: int
    #: Rounds cleared by a solver so far and the seconds they took (0 for scoring policies);
    #: reported in the run's figures (``rounds``, ``solver_seconds``).
    rounds: int
    solver_seconds: float

    def place(
        self, sim: _core.SimCluster, pods: Sequence[int], values: np.ndarray
    ) -> list[SimPlacement | None]:
        """Place ``pods`` (rows of ``sim``'s pod table; ``values[k]`` is pod k's worth in
        GPU-equivalents) on ``sim``, applying each placement; one placement or None per pod."""
        ...


@dataclass(frozen=True)
class MixedSetup:
    """What a mixed-scenario policy is made with, once per run (policy, seed)."""

    #: The run's workload (agents and their classes, every job of the run).
    workload: Workload
    #: The fleet and the models it has beyond the catalog.
    nodes: tuple[Node, ...]
    extra_models: tuple[GpuModel, ...]
    #: GPUs of the fleet.
    capacity: float
    #: The solve options (the auction's solver, time limit, alpha ...).
    params: SolveParams
    #: The run's seed (the auction adds it to its round seeds).
    seed: int
    #: Check every round the policy clears with the independent checker, where it can.
    verify: bool = False


class MixedPolicy(Protocol):
    """A policy of the mixed-priority scenario, for one run."""

    def __call__(
        self,
        nodes: tuple[Node, ...],
        extra_models: tuple[GpuModel, ...],
        pending: Sequence[MixedPod],
        running: Sequence[MixedPod],
        round_index: int,
    ) -> Decision:
        """Decide round ``round_index``: ``pending`` in arrival order, ``running`` as placed."""
        ...


@dataclass(frozen=True)
class MigDaySetup:
    """What a ``mig-day`` policy is made with, once per run (policy, seed)."""

    #: The scenario's knobs (fleet sample, round length, re-carving delay, hold time, cost).
    config: MigDayConfig
    #: The day's pods (the same for every policy of one seed).
    workload: MigDayWorkload
    #: The fleet (every GPU in MIG mode, no layout yet).
    nodes: tuple[Node, ...]
    #: The engine's options.
    params: SolveParams
    #: The run's seed (the workload's, and added to each round's solve seed).
    seed: int
    #: Check every solved round with the independent checker.
    verify: bool = False
    #: The run's progress callback (a policy that simulates candidates may report them too).
    progress: Callable[[ProgressEvent], None] | None = None


class MigDayPolicy(Protocol):
    """A policy of the ``mig-day`` scenario, for one run."""

    def initial_layouts(self, gpus: Sequence[MigGpu]) -> list[tuple[MigInstance, ...]]:
        """Each GPU's MIG layout at the start of the day (fleet order)."""
        ...

    def plan(self, view: MigView) -> MigPlan:
        """Before round ``view.index``: what the engine may re-carve and what it is offered."""
        ...


OpenbFactory = Callable[[OpenbSetup], OpenbPolicy]
MixedFactory = Callable[[MixedSetup], MixedPolicy]
MigDayFactory = Callable[[MigDaySetup], MigDayPolicy]


@dataclass(frozen=True)
class PolicyEntry:
    """A policy registered for one scenario."""

    name: str
    scenario: str
    #: Makes the policy object of one run from its setup.
    factory: Callable[[Any], Any]
    #: openb only: the policy runs once per replay mode (online, batch) and its label carries
    #: the mode (``auction-online``); otherwise it runs once, labelled by its name.
    per_mode: bool = False
    #: One line for listings.
    summary: str = ""
    #: A variant reported apart from the headline figures (openb's migration policies): run
    #: only when named, never by default (``names(..., headline=True)`` leaves it out).
    variant: bool = False

    def label(self, mode: str) -> str:
        """The run's label: the name, and the mode for a per-mode policy."""
        return f"{self.name}-{mode}" if self.per_mode else self.name


_REGISTRY: dict[tuple[str, str], PolicyEntry] = {}
_BUILTINS_LOADED = False


@overload
def register(
    name: str,
    scenario: Literal["openb"],
    factory: OpenbFactory,
    *,
    per_mode: bool = False,
    summary: str = "",
    variant: bool = False,
    replace: bool = False,
) -> PolicyEntry: ...


@overload
def register(
    name: str,
    scenario: Literal["mixed"],
    factory: MixedFactory,
    *,
    per_mode: bool = False,
    summary: str = "",
    variant: bool = False,
    replace: bool = False,
) -> PolicyEntry: ...


@overload
def register(
    name: str,
    scenario: Literal["mig-day"],
    factory: MigDayFactory,
    *,
    per_mode: bool = False,
    summary: str = "",
    variant: bool = False,
    replace: bool = False,
) -> PolicyEntry: ...


def register(
    name: str,
    scenario: str,
    factory: Callable[[Any], Any],
    *,
    per_mode: bool = False,
    summary: str = "",
    variant: bool = False,
    replace: bool = False,
) -> PolicyEntry:
    """Register ``factory`` as policy ``name`` of ``scenario``; returns the entry.

    Raises ValueError on an unknown scenario, a name that is empty or has a comma, ``per_mode``
    outside openb, or a name already registered for the scenario (unless ``replace``).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if not name or name != name.strip() or "," in name:
        raise ValueError(f"policy: a name without commas or spaces around it, got {name!r}")
    if per_mode and scenario != "openb":
        raise ValueError("per_mode: only openb policies run once per mode")
    if (scenario, name) in _REGISTRY and not replace:
        raise ValueError(f"policy: {name!r} is already registered for {scenario}")
    entry = PolicyEntry(
        name, scenario, factory, per_mode=per_mode, summary=summary, variant=variant
    )
    _REGISTRY[(scenario, name)] = entry
    return entry


def unregister(name: str, scenario: str) -> None:
    """Remove policy ``name`` of ``scenario`` (a no-op if it is not registered)."""
    _REGISTRY.pop((scenario, name), None)


def get(name: str, scenario: str) -> PolicyEntry:
    """The entry of policy ``name`` for ``scenario``; ValueError naming the known ones."""
    _load_builtins()
    entry = _REGISTRY.get((scenario, name))
    if entry is None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario: must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        known = ", ".join(names(scenario))
        raise ValueError(f"policy: unknown {name!r} for {scenario} (known: {known})")
    return entry


def names(scenario: str | None = None, *, headline: bool = False) -> tuple[str, ...]:
    """Policy names of ``scenario`` in registration order (None: of any scenario, each once);
    with ``headline``, without the variants reported apart (what runs by default)."""
    _load_builtins()
    out: list[str] = []
    for (s, n), entry in _REGISTRY.items():
        if headline and entry.variant:
            continue
        if (scenario is None or s == scenario) and n not in out:
            out.append(n)
    return tuple(out)


def _load_builtins() -> None:
    """Import the package's policy modules (once); each registers its policies."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True  # before importing: a module may read the registry as it loads
    package = __name__.rsplit(".", 1)[0]
    path = importlib.import_module(package).__path__
    try:
        for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if info.name != "registry" and not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    except BaseException:
        _BUILTINS_LOADED = False
        raise
