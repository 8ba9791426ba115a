"""The domain model: GPU catalog, occupancy rules, Problem, Result, validation and JSON.

No I/O beyond reading a JSON file on request, no solvers, no Kubernetes.
"""

from allocator.model.catalog import CATALOG, GpuModel, MigProfile, find_model, whole_gpu_model
from allocator.model.errors import ProblemError
from allocator.model.occupancy import GpuOccupancy, NodeOccupancy, OccupancyError
from allocator.model.problem import (
    GPU_MODES,
    LOCALITIES,
    UNIT_KINDS,
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    Unit,
    Wallet,
)
from allocator.model.result import (
    LOSS_REASONS,
    PAYMENT_RULES,
    SOLVERS,
    GpuLayout,
    Loss,
    PaymentAudit,
    Result,
    Winner,
)
from allocator.model.serialize import (
    audit_to_dict,
    load_problem,
    load_result,
    placement_to_dict,
    problem_from_dict,
    problem_to_dict,
    result_from_dict,
    result_to_dict,
)

__all__ = [
    "CATALOG",
    "find_model",
    "GPU_MODES",
    "LOCALITIES",
    "LOSS_REASONS",
    "PAYMENT_RULES",
    "SOLVERS",
    "UNIT_KINDS",
    "Alternative",
    "Bid",
    "Gpu",
    "GpuModel",
    "GpuOccupancy",
    "Incumbent",
    "Loss",
    "MigInstance",
    "MigProfile",
    "Node",
    "NodeOccupancy",
    "OccupancyError",
    "PaymentAudit",
    "Placement",
    "Problem",
    "ProblemError",
    "GpuLayout",
    "Result",
    "Unit",
    "Wallet",
    "Winner",
    "audit_to_dict",
    "load_problem",
    "load_result",
    "placement_to_dict",
    "problem_from_dict",
    "problem_to_dict",
    "result_from_dict",
    "result_to_dict",
    "whole_gpu_model",
]
