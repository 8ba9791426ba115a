"""Simulator: replay production traces against the cluster under a placement policy.

``traces`` reads the Alibaba openb node and pod lists; ``replay`` runs the FGD paper's
experiment (arrival order, inflation to 130%, allocation and fragmentation metrics) for the
one-pod-at-a-time policies of the C++ core and for the auction engine, online or in rounds;
``experiment`` runs policies x seeds x traces and writes results. ``mixed`` is the
mixed-priority scenario (inference and research agents, departures) under auction, fifo and kai
(``baselines``), and ``mixed_report`` its benchmark. ``migday`` is dynamic MIG over a day
(fixed layouts against layouts the engine re-carves) and ``migday_report`` its benchmark and
plot. ``policies`` is the one registry of every scenario's policies (a new policy is one module
there); ``progress`` the event their runs report progress with (the package writes nothing to
the terminal). ``bound`` is a proven ceiling on the allocation any policy reaches on a set of
arrived pods. ``rounds`` rebuilds an auction round as Problem/Result for ``verify``. This
package reads files and calls the engine; it never talks to Kubernetes.
"""

from allocator.sim.progress import ProgressEvent
from allocator.sim.replay import (
    Curve,
    arrival_order,
    run_replay,
    summarize,
    typical_workload,
)
from allocator.sim.traces import (
    OPENB_TRACES,
    ClusterTrace,
    PodTrace,
    TraceError,
    load_openb_nodes,
    load_openb_pods,
    resolve_trace,
)

__all__ = [
    "OPENB_TRACES",
    "ClusterTrace",
    "Curve",
    "PodTrace",
    "ProgressEvent",
    "TraceError",
    "arrival_order",
    "load_openb_nodes",
    "load_openb_pods",
    "resolve_trace",
    "run_replay",
    "summarize",
    "typical_workload",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``PLACEMENT_POLICIES`` (see :mod:`allocator.sim.replay`), read from the registry."""
    if name == "PLACEMENT_POLICIES":
        from allocator.sim import replay

        return replay.PLACEMENT_POLICIES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
