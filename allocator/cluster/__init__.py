"""The Kubernetes side: read the cluster into a Problem, and (later) apply a Result.

``read`` turns API objects (as the JSON the API server returns: nodes, pods, Wallet custom
resources) into a frozen :class:`allocator.model.Problem` plus what it had to skip and why; it
is pure (no API calls; of the client it uses only the quantity parser). ``api`` fetches those
objects with the official ``kubernetes`` client. Only this package imports ``kubernetes`` (an
import-linter contract). Conventions (resource names, labels, annotations) are in
docs/kubernetes.md.
"""

from allocator.cluster.config import ANNOTATION_PREFIX, ClusterConfig
from allocator.cluster.read import Skipped, Snapshot, parse_quantity, snapshot

__all__ = [
    "ANNOTATION_PREFIX",
    "ClusterConfig",
    "Skipped",
    "Snapshot",
    "parse_quantity",
    "snapshot",
]
