"""The simulator's policies, one registry for all scenarios (openb replay, mixed, mig-day).

Built-in policies, one module per family:

* :mod:`.scored`: the one-pod-at-a-time score policies of the C++ core (``random``, ``fifo``,
  ``bestfit``, ``dotprod``, ``gpupacking``, ``fgd``, ``kai``), openb;
* :mod:`.auction`: the project's engine (``auction``), openb (online or batch rounds on the
  simulator's state) and mixed (a market with wallets and preemption);
* :mod:`.schedulers`: the Kubernetes schedulers of the mixed scenario (``fifo``: kube-scheduler's
  arrival order; ``kai``: the KAI Scheduler's queues), placing through the engine;
* :mod:`.migday`: the MIG layouts of the ``mig-day`` scenario (``fixed-all-1g``,
  ``fixed-balanced``, ``fixed-all-7g``, ``fixed-best``: layouts kept all day; ``planned``: the
  engine re-carves idle GPUs when that pays).

A new policy is one more module here calling :func:`register` (see :mod:`.registry` and
docs/simulator.md, "Adding a policy").
"""

from allocator.sim.policies.registry import (
    SCENARIOS,
    MigDayPolicy,
    MigDaySetup,
    MixedPolicy,
    MixedSetup,
    OpenbPolicy,
    OpenbSetup,
    PolicyEntry,
    SimPlacement,
    get,
    names,
    register,
    unregister,
)

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
