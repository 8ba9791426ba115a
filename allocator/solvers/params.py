"""Every option of a solve in one frozen, validated object, :class:`SolveParams`.

One place says what a solve can be told: which solver and payment rule, its limits (wall time
and deterministic work), threads, seed, and the engine's packing knobs. :func:`allocator.solve`
takes it (``solve(problem, params=...)``; its keyword shortcuts override single fields), and so
do the simulator's policies, the benchmarks and the Kubernetes loop. A TOML file holds the same
fields by name (``--params FILE`` on ``solve``, ``simulate`` and ``run``)::

    solver = "local"
    payments = "auto"           # critical up to auto_critical_max_bids bids, los above
    time_limit = 30.0          # seconds, each of local search and CP-SAT (a safety cap)
    local_iterations = 2000    # deterministic work limit of local search
    cpsat_work = 20.0          # deterministic work limit of CP-SAT (its "deterministic time")
    alpha = 0.75

A wall-clock limit makes the answer depend on the machine's load; the two work limits do not:
with them (and one CP-SAT worker, which is what ``solve`` uses), a solve gives the same answer on
a quiet and on a loaded machine, as long as ``time_limit`` does not bind first.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from allocator.model import PAYMENT_RULES, SOLVERS, ProblemError
from allocator.solvers.arguments import check_seed, check_time_limit

__all__ = ["PACKINGS", "PAYMENT_CHOICES", "SolveParams"]

#: What ``packing`` may say.
PACKINGS = ("fgd", "pattern")

#: What ``payments`` may say: a rule, or ``auto`` (exact ``critical`` on rounds of at most
#: ``auto_critical_max_bids`` bids, ``los`` above; the Result names the rule that priced).
PAYMENT_CHOICES = ("auto", *PAYMENT_RULES)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class SolveParams:
    """The options of one solve; invalid values raise :class:`ProblemError` naming the field."""

    #: ``greedy``, ``local``, ``cpsat`` or ``auto`` (local search, and CP-SAT on small rounds).
    solver: str = "auto"
    #: ``auto`` (default: ``critical`` up to ``auto_critical_max_bids`` bids, ``los`` above),
    #: ``critical`` (exact, a replay per winner), ``los`` (one pass over the greedy run),
    #: ``first-price`` or ``vcg`` (the exact solver only).
    payments: str = "auto"
    #: Seconds of wall time for local search and for CP-SAT (each); greedy ignores it.
    time_limit: float = 10.0
    #: Threads for critical payments (0: one per CPU); the payments are the same for any count.
    threads: int = 1
    #: Seed of the randomised parts (local search moves, CP-SAT's search).
    seed: int = 0
    #: Exponent of size in the greedy ranking score ``value / size**alpha``.
    alpha: float = 0.75
    #: Give the engine the expected workload for its packing of whole and shared GPUs (FGD's
    #: target workload); used where one is known (the trace simulator), else the round's bids.
    workload_hint: bool = True
    #: Milli-GPU steps in which fragmentation growths are compared (0: exactly). Like
    #: ``workload_hint`` and ``node_order``, read by the trace simulator's auction rounds;
    #: :func:`allocator.solve` ranks with ``alpha`` and packs with the engine's defaults.
    fragment_scale: float = 1000.0
    #: Order in which nodes are preferred between equally good placements (a permutation of
    #: the node indices; empty: a fixed hash order). Only used with a workload hint.
    node_order: tuple[int, ...] = ()
    #: How the engine packs whole and shared GPUs: ``fgd`` (FGD's fragmentation growth, the
    #: default) or ``pattern`` (shares where they lose the least value of the pattern linear
    #: program, then FGD's growth with a CPU and memory reserve: the C++ core's
    #: ``gpualloc/pattern.hpp``). :func:`allocator.solve` takes the program's values from the
    #: round's own GPU bids; the trace simulator from the trace.
    packing: str = "fgd"
    #: Deterministic work limit of local search: at most this many moves (None: no limit).
    local_iterations: int | None = None
    #: Local search stops after this many moves without a gain (0: a default from the size).
    local_patience: int = 0
    #: Deterministic work limit of CP-SAT, in its deterministic time units (None: no limit).
    cpsat_work: float | None = None
    #: ``auto`` also runs CP-SAT when the round has at most this many bids ...
    auto_cpsat_max_bids: int = 300
    #: ... and at most this many GPUs.
    auto_cpsat_max_gpus: int = 128
    #: ``payments="auto"`` prices rounds of at most this many bids with exact ``critical``
    #: payments, larger ones with ``los``.
    auto_critical_max_bids: int = 1000
    #: Where ``los`` priced a round: how many winners (a sample drawn with ``seed``) to price
    #: exactly as well, to report the rule's deviation in ``Result.audit`` (0: no audit) ...
    audit_sample: int = 64
    #: ... within this many seconds (the winners replayed by then are reported).
    audit_time: float = 2.0
    #: Where the parameters came from (a file name), for messages; not an option.
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            self._fail("solver", f"must be one of {', '.join(SOLVERS)}; got {self.solver!r}")
        if self.payments not in PAYMENT_CHOICES:
            self._fail(
                "payments", f"must be one of {', '.join(PAYMENT_CHOICES)}; got {self.payments!r}"
            )
        if self.payments == "vcg" and self.solver not in ("cpsat", "auto"):
            self._fail("payments", "vcg needs the exact solver: use solver='cpsat'")
        try:
            check_time_limit(self.time_limit)
            check_seed(self.seed)
        except ProblemError as e:
            self._fail(e.path, e.message)
        if not _is_int(self.threads) or self.threads < 0:
            self._fail("threads", f"must be an integer >= 0 (0: one per CPU); got {self.threads!r}")
        if not _is_number(self.alpha) or not math.isfinite(self.alpha) or self.alpha < 0:
            self._fail("alpha", f"must be a finite number >= 0, got {self.alpha!r}")
        if not isinstance(self.workload_hint, bool):
            self._fail("workload_hint", f"must be true or false, got {self.workload_hint!r}")
        if (
            not _is_number(self.fragment_scale)
            or not math.isfinite(self.fragment_scale)
            or self.fragment_scale < 0
        ):
            self._fail(
                "fragment_scale", f"must be a finite number >= 0, got {self.fragment_scale!r}"
            )
        self._check_node_order()
        if self.packing not in PACKINGS:
            self._fail("packing", f"must be one of {', '.join(PACKINGS)}; got {self.packing!r}")
        if self.local_iterations is not None and (
            not _is_int(self.local_iterations) or self.local_iterations < 0
        ):
            self._fail(
                "local_iterations", f"must be an integer >= 0, got {self.local_iterations!r}"
            )
        if not _is_int(self.local_patience) or self.local_patience < 0:
            self._fail("local_patience", f"must be an integer >= 0, got {self.local_patience!r}")
        if self.cpsat_work is not None and (
            not _is_number(self.cpsat_work)
            or not math.isfinite(self.cpsat_work)
            or self.cpsat_work <= 0
        ):
            self._fail("cpsat_work", f"must be a positive number, got {self.cpsat_work!r}")
        if (
            not _is_number(self.audit_time)
            or not math.isfinite(self.audit_time)
            or self.audit_time < 0
        ):
            self._fail("audit_time", f"must be a finite number >= 0, got {self.audit_time!r}")
        for name in (
            "auto_cpsat_max_bids",
            "auto_cpsat_max_gpus",
            "auto_critical_max_bids",
            "audit_sample",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                self._fail(name, f"must be an integer >= 0, got {value!r}")

    def _check_node_order(self) -> None:
        order = self.node_order
        if isinstance(order, list):  # from TOML or JSON: keep the object frozen and hashable
            object.__setattr__(self, "node_order", tuple(order))
            order = self.node_order
        if not isinstance(order, tuple) or not all(_is_int(i) for i in order):
            self._fail("node_order", f"must be a list of node indices, got {order!r}")
        if sorted(order) != list(range(len(order))):
            self._fail("node_order", "must be a permutation of 0..N-1 (each node once)")

    def _fail(self, name: str, message: str) -> None:
        where = f"{self.source}: " if self.source else ""
        raise ProblemError(name, f"{where}{message}")

    # ------------------------------------------------------------------ building
    def replace(self, **changes: Any) -> SolveParams:
        """A copy with ``changes`` applied (validated again); unknown names raise ProblemError."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise ProblemError(name, f"not a solve parameter (known: {', '.join(_names())})")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], source: str = "", base: SolveParams | None = None
    ) -> SolveParams:
        """Parameters from a mapping of field names (e.g. a parsed TOML file); fields left out
        keep ``base``'s values (default: the defaults), unknown names raise ProblemError naming
        them."""
        known = set(_names())
        for name in data:
            if name not in known:
                where = f"{source}: " if source else ""
                raise ProblemError(
                    name, f"{where}not a solve parameter (known: {', '.join(_names())})"
                )
        start = {} if base is None else base.to_dict()
        return cls(**{**start, **dict(data)}, source=source)

    @classmethod
    def from_toml(cls, path: str | Path, base: SolveParams | None = None) -> SolveParams:
        """Parameters from a TOML file of ``name = value`` lines (see the module docstring);
        fields the file leaves out keep ``base``'s values (default: the defaults)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ProblemError("params", f"cannot read {p}: {e.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ProblemError("params", f"{p}: not valid TOML: {e}") from None
        return cls.from_mapping(data, source=str(p), base=base)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (what a TOML file or a Result's stats would hold)."""
        out = {name: getattr(self, name) for name in _names()}
        out["node_order"] = list(self.node_order)
        return out


def _names() -> list[str]:
    return [f.name for f in fields(SolveParams) if f.name != "source"]
