"""gpu-allocator: a combinatorial GPU auction for Kubernetes.

Users import from here: build or load a :class:`Problem`, call :func:`solve`, check the
:class:`Result` with :func:`verify`. Subpackages: ``model`` (data, validation, JSON), ``solvers``
(greedy/local in C++, exact CP-SAT), ``verify`` (the independent checker), ``cli``.
"""

from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    GpuModel,
    Incumbent,
    Loss,
    MigInstance,
    MigProfile,
    Node,
    Placement,
    Problem,
    ProblemError,
    Result,
    Unit,
    Wallet,
    Winner,
    load_problem,
    load_result,
    problem_from_dict,
    problem_to_dict,
    result_from_dict,
    result_to_dict,
)
from allocator.solvers import solve
from allocator.verify import Violation, verify

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "Alternative",
    "Bid",
    "Gpu",
    "GpuModel",
    "Incumbent",
    "Loss",
    "MigInstance",
    "MigProfile",
    "Node",
    "Placement",
    "Problem",
    "ProblemError",
    "Result",
    "Unit",
    "Violation",
    "Wallet",
    "Winner",
    "load_problem",
    "load_result",
    "problem_from_dict",
    "problem_to_dict",
    "result_from_dict",
    "result_to_dict",
    "solve",
    "verify",
]
