"""The agent SDK: bid for GPUs through an agent's own Kubernetes API server.

An agent (a service, a pipeline, an autonomous program) talks only to its own cluster (in a
vcluster, the virtual one): :class:`AgentClient` creates its workloads as pods carrying bids,
re-prices, shrinks or withdraws them, reads what each round decided and the market the allocator
publishes there (``allocator.model.market``), and :func:`run_agent` runs a :class:`Policy` once
per round. Decisions (``policy``, ``status``, ``workload``) are pure; only ``client`` and ``run``
do I/O.

This package may import ``kubernetes`` and the model; it must not import the allocator's own
cluster code, solvers or simulator (``allocator.cluster``, ``allocator.solvers``,
``allocator.sim``) or ``ortools``: an agent needs none of them (checked by import-linter).
"""

from allocator.agent.client import AgentClient, Workload, WorkloadError, WorkloadNotFound
from allocator.agent.policy import (
    Action,
    Chain,
    DeadlinePolicy,
    Keep,
    Policy,
    RaiseBid,
    RoundView,
    Shrink,
    ShrinkWhenOutbid,
    Submit,
    Withdraw,
    WithdrawAbove,
    reference_price,
)
from allocator.agent.run import RoundLog, apply_action, describe_action, run_agent
from allocator.agent.status import Phase, PodState, WorkloadStatus, workload_statuses
from allocator.agent.workload import WorkloadSpec, spec_from_pods, split_bid
from allocator.model.market import (
    MARKET_CONFIGMAP,
    MARKET_NAMESPACE,
    MarketView,
    PodOutcome,
    PriceRecord,
    WalletView,
)

__all__ = [
    "MARKET_CONFIGMAP",
    "MARKET_NAMESPACE",
    "Action",
    "AgentClient",
    "Chain",
    "DeadlinePolicy",
    "Keep",
    "MarketView",
    "Phase",
    "PodOutcome",
    "PodState",
    "Policy",
    "PriceRecord",
    "RaiseBid",
    "RoundLog",
    "RoundView",
    "Shrink",
    "ShrinkWhenOutbid",
    "Submit",
    "WalletView",
    "Withdraw",
    "WithdrawAbove",
    "Workload",
    "WorkloadError",
    "WorkloadNotFound",
    "WorkloadSpec",
    "WorkloadStatus",
    "apply_action",
    "describe_action",
    "reference_price",
    "run_agent",
    "spec_from_pods",
    "split_bid",
    "workload_statuses",
]
