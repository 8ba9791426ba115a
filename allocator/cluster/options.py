"""What one round on the cluster is told to do: :class:`RoundOptions`.

The solve's own options are a :class:`~allocator.solvers.params.SolveParams` (``solve``); the
rest are the round's: its id, dry run, snapshot dump, the Lease, the AllocationRound ledger, how
the plan is applied, and the clients to the agents' clusters. :func:`allocator.cluster.loop.
run_once` takes one; :func:`~allocator.cluster.loop.run_rounds` and
:func:`~allocator.cluster.loop.watch_rounds` give each of their rounds a copy with its own
``round_id``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allocator.cluster.api import APPLY_WORKERS, EVICTION_WAIT
from allocator.model import ProblemError
from allocator.solvers import SolveParams

if TYPE_CHECKING:
    from allocator.cluster.publish import AgentClusters

__all__ = ["KEEP_ROUNDS", "LEASE_SECONDS", "RoundOptions"]

#: Applied AllocationRounds kept in the lease's namespace (older ones are deleted; 0: all kept).
KEEP_ROUNDS = 200
#: Seconds a round holds the Lease for (it releases it once applied).
LEASE_SECONDS = 300


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class RoundOptions:
    """The options of one round; an invalid value raises :class:`ProblemError` (a
    ``ValueError``) naming the field, before anything is read or written.

    With ``lease`` = (namespace, name, holder) the round writes only if this run holds the Lease
    (one writer at a time; taken for ``lease_seconds``) and gives it up when the round is
    applied. With ``record_namespace`` every applied round that binds, evicts or charges is
    recorded there as an AllocationRound (see :func:`allocator.cluster.loop.run_once`).
    """

    #: The solve: solver, payment rule, limits, threads for critical payments, seed.
    solve: SolveParams = field(default_factory=SolveParams)
    #: The round's id (None: a fresh one, see :func:`allocator.cluster.loop.new_round_id`).
    round_id: str | None = None
    #: Plan only: nothing is written (no Lease taken, nothing applied, recorded or published).
    dry_run: bool = False
    #: Write the round's Problem here as JSON (what ``gpu-allocator solve`` reads).
    dump_snapshot: str | Path | None = None
    #: (namespace, name, holder) of the coordination.k8s.io Lease to hold while writing.
    lease: tuple[str, str, str] | None = None
    #: How long the Lease is taken for, in seconds.
    lease_seconds: int = LEASE_SECONDS
    #: Namespace of the AllocationRound ledger (None: rounds are not recorded).
    record_namespace: str | None = None
    #: API calls of an apply in flight at once (see :func:`allocator.cluster.api.apply_plan`).
    apply_workers: int = APPLY_WORKERS
    #: After a recorded round, keep the newest this many Applied AllocationRounds (0: all).
    keep_rounds: int = KEEP_ROUNDS
    #: Seconds bindings into the room of evicted pods wait for them to be gone.
    eviction_wait: float = EVICTION_WAIT
    #: Clients to the agents' own clusters, shared by a loop's rounds (None: made per round).
    agent_clusters: AgentClusters | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.solve, SolveParams):
            _fail("solve", f"must be a SolveParams, got {type(self.solve).__name__}")
        if self.round_id is not None and (not isinstance(self.round_id, str) or not self.round_id):
            _fail("round_id", f"must be a non-empty string or None, got {self.round_id!r}")
        if not isinstance(self.dry_run, bool):
            _fail("dry_run", f"must be true or false, got {self.dry_run!r}")
        if self.dump_snapshot is not None and not isinstance(self.dump_snapshot, str | Path):
            _fail("dump_snapshot", f"must be a path or None, got {self.dump_snapshot!r}")
        self._check_lease()
        if self.record_namespace is not None and (
            not isinstance(self.record_namespace, str) or not self.record_namespace
        ):
            _fail("record_namespace", f"must be a namespace or None, got {self.record_namespace!r}")
        _check_int("lease_seconds", self.lease_seconds, least=1)
        _check_int("apply_workers", self.apply_workers, least=1)
        _check_int("keep_rounds", self.keep_rounds, least=0)
        wait = self.eviction_wait
        if not isinstance(wait, int | float) or isinstance(wait, bool):
            _fail("eviction_wait", f"must be a number of seconds, got {wait!r}")
        if not math.isfinite(wait) or wait < 0:
            _fail("eviction_wait", f"must be >= 0 seconds, got {wait!r}")

    def _check_lease(self) -> None:
        lease = self.lease
        if lease is None:
            return
        if isinstance(lease, list):  # from JSON or YAML: keep the object frozen and hashable
            object.__setattr__(self, "lease", tuple(lease))
            lease = self.lease
        if (
            not isinstance(lease, tuple)
            or len(lease) != 3
            or not all(isinstance(part, str) and part for part in lease)
        ):
            _fail("lease", f"must be (namespace, name, holder), non-empty strings; got {lease!r}")

    def replace(self, **changes: Any) -> RoundOptions:
        """A copy with ``changes`` applied (validated again); unknown names raise ProblemError."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                _fail(name, f"not a round option (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, *, least: int) -> None:
    if not _is_int(value) or value < least:
        _fail(name, f"must be an integer >= {least}, got {value!r}")


def _fail(name: str, message: str) -> None:
    raise ProblemError(name, message)
