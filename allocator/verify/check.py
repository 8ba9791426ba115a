"""The independent result checker: does a :class:`Result` obey every rule of its :class:`Problem`?

Written from the model's docstrings alone. It shares no code with the solvers (import-linter
enforces that), so a bug in the packing or payment code cannot hide itself here. It reads only the
data classes and the catalog's MIG tables.

The checker replays the round on a fresh occupancy map: work outside the market (``used_milli``,
``Gpu.mig_instances``) first, then the incumbents that were kept, then each winner's placements
in order. Every broken rule becomes one :class:`Violation`; a placement that cannot even be
located (unknown node or GPU, wrong kind) is reported once and not checked further.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from allocator.model import (
    LOSS_REASONS,
    Alternative,
    Gpu,
    GpuModel,
    Incumbent,
    MigProfile,
    Node,
    Placement,
    Problem,
    Result,
    Winner,
)

__all__ = ["ResultInvalid", "Violation", "check_or_raise", "verify"]

#: Absolute slack for money sums (wallets, payments, reserves) against float rounding.
ABS_TOL = 1e-6
#: Relative slack for welfare and revenue.
REL_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule.

    Parameters
    ----------
    rule
        Short stable code, e.g. ``"mig.overlap"`` or ``"wallet"``.
    path
        Where in the result (or problem) it shows, e.g. ``"winners[2].placements[0].mig_start"``.
    message
        What is wrong, with the numbers.
    """

    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.path}: {self.message}"


class ResultInvalid(ValueError):
    """A result broke at least one rule; ``violations`` lists them all."""

    def __init__(self, violations: list[Violation]) -> None:
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(f"result breaks {len(violations)} rule(s):\n{lines}")
        self.violations = violations


def check_or_raise(problem: Problem, result: Result) -> None:
    """Raise :class:`ResultInvalid` unless ``result`` is a valid outcome of ``problem``."""
    violations = verify(problem, result)
    if violations:
        raise ResultInvalid(violations)


# ---------------------------------------------------------------------- occupancy of one GPU
@dataclass(slots=True)
class _MigHolding:
    profile: MigProfile
    start: int
    owner: str

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.profile.size)


@dataclass(slots=True)
class _GpuState:
    """What is on one GPU so far, with who holds it (for the messages)."""

    node: Node
    gpu: Gpu
    model: GpuModel
    whole_owner: str | None = None
    share_milli: int = 0
    share_owners: list[str] = field(default_factory=list)
    mig: list[_MigHolding] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"GPU {self.gpu.index} of node {self.node.name!r} ({self.model.name})"


class _Cluster:
    """The occupancy map the round is replayed on, and the per-node CPU/memory use."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.nodes: dict[str, Node] = {n.name: n for n in problem.nodes}
        self.gpus: dict[tuple[str, int], _GpuState] = {}
        for n in problem.nodes:
            for g in n.gpus:
                model = problem.model(g.model)
                state = _GpuState(n, g, model)
                for inst in g.mig_instances:
                    profile = model.profile(inst.profile)
                    if profile is not None:  # the Problem validated the outside layout
                        state.mig.append(_MigHolding(profile, inst.start, "outside work"))
                self.gpus[(n.name, g.index)] = state
        self.cpu_used: dict[str, int] = {}
        self.memory_used: dict[str, int] = {}

    def add_resources(self, node: str, cpu_milli: int, memory_mib: int) -> None:
        self.cpu_used[node] = self.cpu_used.get(node, 0) + cpu_milli
        self.memory_used[node] = self.memory_used.get(node, 0) + memory_mib

    def locate(self, placement: Placement) -> list[_GpuState] | None:
        """The GPU states a placement names, or None if a node or GPU does not exist."""
        states = [self.gpus.get((placement.node, i)) for i in placement.gpus]
        if any(s is None for s in states):
            return None
        return [s for s in states if s is not None]

    def place(self, placement: Placement, owner: str, path: str) -> list[Violation]:
        """Put ``placement`` on the map for ``owner``; return the rules it breaks."""
        if placement.node not in self.nodes:
            return [Violation("placement.node", f"{path}.node", f"no node {placement.node!r}")]
        states = self.locate(placement)
        if states is None:
            have = sorted(g.index for g in self.nodes[placement.node].gpus)
            return [
                Violation(
                    "placement.gpu",
                    f"{path}.gpus",
                    f"node {placement.node!r} has GPUs {have}, not all of {list(placement.gpus)}",
                )
            ]
        out: list[Violation] = []
        for state in states:
            if placement.kind == "whole":
                out += _place_whole(state, owner, f"{path}.gpus")
            elif placement.kind == "share":
                out += _place_share(state, placement.milli, owner, path)
            else:
                out += _place_mig(state, placement, owner, path)
        return out


def _place_whole(state: _GpuState, owner: str, path: str) -> list[Violation]:
    g = state.gpu
    if g.mode not in ("whole", "shared"):
        return [
            Violation("gpu.mode", path, f"a whole-GPU placement on {state.label}, a {g.mode} GPU")
        ]
    out: list[Violation] = []
    if state.whole_owner is not None:
        out.append(
            Violation(
                "capacity.whole", path, f"{state.label} is already held by {state.whole_owner}"
            )
        )
    elif g.used_milli or state.share_milli:
        out.append(
            Violation(
                "capacity.whole",
                path,
                f"{state.label} is shared: {g.used_milli} milli used outside, "
                f"{state.share_milli} milli by {state.share_owners}; a whole GPU needs it empty",
            )
        )
    if not out:
        state.whole_owner = owner
    return out


def _place_share(state: _GpuState, milli: int, owner: str, path: str) -> list[Violation]:
    g = state.gpu
    if g.mode != "shared":
        return [Violation("gpu.mode", f"{path}.gpus", f"a share on {state.label}, a {g.mode} GPU")]
    if state.whole_owner is not None:
        return [
            Violation(
                "capacity.whole",
                f"{path}.gpus",
                f"{state.label} is held whole by {state.whole_owner}; no share fits",
            )
        ]
    total = g.used_milli + state.share_milli + milli
    if total > 1000:
        return [
            Violation(
                "capacity.milli",
                f"{path}.milli",
                f"{state.label}: {g.used_milli} outside + {state.share_milli} placed + {milli} "
                f"= {total} milli > 1000",
            )
        ]
    state.share_milli += milli
    state.share_owners.append(owner)
    return []


def _place_mig(state: _GpuState, placement: Placement, owner: str, path: str) -> list[Violation]:
    """Check one MIG instance against the model's table and what is already on the GPU.

    At most one violation per placement, the most basic first: a wrong profile or start makes
    the later questions meaningless, and an overlap makes the count questions moot.
    """
    found = _mig_table_violation(state, placement, path)
    if found is not None:
        return [found]
    profile = state.model.profile(placement.mig_profile or "")
    assert profile is not None  # checked by the table
    new = _MigHolding(profile, placement.mig_start or 0, owner)
    found = _mig_fit_violation(state, new, placement.mig_profile or "", path)
    if found is not None:
        return [found]
    state.mig.append(new)
    return []


def _mig_table_violation(state: _GpuState, placement: Placement, path: str) -> Violation | None:
    """A MIG instance on a GPU not in MIG mode, of a profile its model lacks, or at a start the
    profile may not use."""
    g, model = state.gpu, state.model
    name = placement.mig_profile or ""
    start = placement.mig_start if placement.mig_start is not None else 0
    if g.mode != "mig":
        return Violation(
            "gpu.mode", f"{path}.gpus", f"a MIG instance on {state.label}, a {g.mode} GPU"
        )
    profile = model.profile(name)
    if profile is None:
        return Violation(
            "mig.profile",
            f"{path}.mig_profile",
            f"{model.name} has no MIG profile {name!r} (has {[p.name for p in model.profiles]})",
        )
    if start not in profile.starts:
        return Violation(
            "mig.start",
            f"{path}.mig_start",
            f"{name} cannot start at slot {start} on {model.name} "
            f"(legal starts {list(profile.starts)}, {model.mig_units} slices)",
        )
    return None


def _mig_fit_violation(
    state: _GpuState, new: _MigHolding, name: str, path: str
) -> Violation | None:
    """A legal MIG instance (``name``: its profile as the placement says it) that collides with
    what the GPU holds: overlapping slices, a second ``+me`` instance, or one instance too many
    of its profile."""
    profile, start = new.profile, new.start
    for held in state.mig:
        common = set(held.slices) & set(new.slices)
        if common:
            return Violation(
                "mig.overlap",
                f"{path}.mig_start",
                f"{name}@{start} occupies slices [{start}, {start + profile.size}) of "
                f"{state.label}, overlapping {held.profile.name}@{held.start} of {held.owner} "
                f"on slices {sorted(common)}",
            )
    if profile.media:
        media = [h for h in state.mig if h.profile.media]
        if media:
            return Violation(
                "mig.media",
                f"{path}.mig_profile",
                f"{state.label} already has a +me instance ({media[0].profile.name}@"
                f"{media[0].start} of {media[0].owner}); at most one per GPU",
            )
    same = sum(1 for h in state.mig if h.profile.name == profile.name)
    if same + 1 > profile.max_count:
        return Violation(
            "mig.max_count",
            f"{path}.mig_profile",
            f"{same + 1} instances of {name} on {state.label}, at most {profile.max_count}",
        )
    return None


# ---------------------------------------------------------------------- the whole result
def verify(problem: Problem, result: Result) -> list[Violation]:
    """Every rule of ``problem`` that ``result`` breaks; an empty list means the result is valid.

    Checks the winners (bid exists and wins once, valid alternative, its value), the gang (one
    placement per replica, each of the unit's kind), GPU modes and capacity (whole GPUs owned
    once, shares within 1000 milli, MIG profiles, starts, overlaps, counts and ``+me``), node CPU
    and memory, one model per alternative within ``models`` and ``min_gpu_memory_gb``, locality,
    wallets, reserve prices, evictions (known, preemptible), payments, revenue, welfare and that
    every bid is a winner or a loser exactly once with a known reason.
    """
    out: list[Violation] = []
    if result.round_id != problem.round_id:
        out.append(
            Violation(
                "round_id",
                "round_id",
                f"result is for round {result.round_id!r}, problem is {problem.round_id!r}",
            )
        )
    cluster = _Cluster(problem)
    evicted = _check_evictions(problem, result, out)
    for i, inc in enumerate(problem.incumbents):
        if inc.id not in evicted:
            _keep_incumbent(cluster, inc, f"incumbents[{i}]")
    winning = _check_winners(problem, result, cluster, out)
    _check_node_resources(problem, cluster, out)
    recarved = _check_layouts(problem, result, cluster, out)
    _check_wallets(problem, winning, out)
    _check_money(problem, result, evicted, recarved, out)
    _check_losers(problem, result, out)
    return out


def _check_layouts(
    problem: Problem, result: Result, cluster: _Cluster, out: list[Violation]
) -> int:
    """Every GPU with a MIG layout in the problem gets exactly one target layout. A kept one is
    the layout as it was, and everything on the GPU sits on its instances; a re-carved one is
    on a recarvable GPU with nothing kept on it (no outside work, no kept incumbent), is a legal
    layout, and holds every winner's instance there. Returns the number re-carved."""
    given = {(n.name, g.index): g for n in problem.nodes for g in n.gpus if g.layout is not None}
    seen: set[tuple[str, int]] = set()
    recarved = 0
    for k, lay in enumerate(result.layouts):
        path = f"layouts[{k}]"
        key = (lay.node, lay.gpu)
        gpu = given.get(key)
        if gpu is None:
            out.append(
                Violation("layout.unknown", path, f"GPU {lay.gpu} of {lay.node!r} has no layout")
            )
            continue
        if key in seen:
            out.append(Violation("layout.duplicate", path, f"GPU {key} has two layouts"))
            continue
        seen.add(key)
        state = cluster.gpus[key]
        held = {(h.profile.name, h.start): h.owner for h in state.mig}
        target = {(x.profile, x.start) for x in lay.instances}
        if not lay.recarved:
            if target != {(x.profile, x.start) for x in gpu.layout or ()}:
                out.append(
                    Violation("layout.changed", path, f"GPU {key}'s layout changed unmarked")
                )
            for (name, start), owner in held.items():
                if (name, start) not in target:
                    out.append(
                        Violation(
                            "layout.instance",
                            path,
                            f"{owner} holds {name}@{start} on GPU {key}, not an instance of "
                            "its layout",
                        )
                    )
            continue
        recarved += 1
        if not gpu.recarvable:
            out.append(Violation("layout.kept", path, f"GPU {key} may not be re-carved"))
        busy = [o for o in held.values() if o == "outside work" or o.startswith("incumbent ")]
        if busy:
            out.append(Violation("layout.busy", path, f"GPU {key} is re-carved under {busy[0]}"))
        missing = [f"{n}@{s}" for (n, s) in held if (n, s) not in target]
        if missing:
            out.append(
                Violation(
                    "layout.instance", path, f"GPU {key}'s new layout lacks {', '.join(missing)}"
                )
            )
        fresh = _GpuState(state.node, state.gpu, state.model)
        for j, x in enumerate(lay.instances):
            pl = Placement(lay.node, (lay.gpu,), mig_profile=x.profile, mig_start=x.start)
            out += _place_mig(fresh, pl, "the new layout", f"{path}.instances[{j}]")
    for key in given.keys() - seen:
        out.append(Violation("layout.missing", "layouts", f"GPU {key} has no target layout"))
    return recarved


def _check_evictions(problem: Problem, result: Result, out: list[Violation]) -> set[str]:
    """The ids of validly evicted incumbents; unknown, repeated and protected ones are reported."""
    by_id = {inc.id: inc for inc in problem.incumbents}
    evicted: set[str] = set()
    for k, inc_id in enumerate(result.evicted):
        path = f"evicted[{k}]"
        inc = by_id.get(inc_id)
        if inc is None:
            out.append(Violation("incumbent.unknown", path, f"no incumbent {inc_id!r}"))
            continue
        if inc_id in evicted:
            out.append(Violation("incumbent.duplicate", path, f"{inc_id!r} is evicted twice"))
            continue
        if not inc.preemptible:
            out.append(
                Violation(
                    "incumbent.not_preemptible",
                    path,
                    f"incumbent {inc_id!r} is not preemptible but was evicted",
                )
            )
        evicted.add(inc_id)
    return evicted


def _keep_incumbent(cluster: _Cluster, inc: Incumbent, path: str) -> None:
    """A kept incumbent stays where it is: its placements block their GPUs, CPU and memory."""
    for j, p in enumerate(inc.placements):
        # The Problem validated incumbents against each other and outside work, so nothing
        # can be broken yet; a violation here would be a bug in the model's validation.
        cluster.place(p, f"incumbent {inc.id!r}", f"{path}.placements[{j}]")
        cluster.add_resources(p.node, inc.cpu_milli, inc.memory_mib)


@dataclass(frozen=True, slots=True)
class _Won:
    """A winner whose bid and alternative were found."""

    index: int
    winner: Winner
    wallet: str
    alternative: Alternative


def _check_winners(
    problem: Problem, result: Result, cluster: _Cluster, out: list[Violation]
) -> list[_Won]:
    bids = {b.id: b for b in problem.bids}
    seen: set[str] = set()
    won: list[_Won] = []
    for i, w in enumerate(result.winners):
        path = f"winners[{i}]"
        bid = bids.get(w.bid_id)
        if bid is None:
            out.append(Violation("unknown.bid", f"{path}.bid_id", f"no bid {w.bid_id!r}"))
            continue
        if w.bid_id in seen:
            out.append(
                Violation("duplicate.winner", f"{path}.bid_id", f"bid {w.bid_id!r} wins twice")
            )
            continue
        seen.add(w.bid_id)
        if not 0 <= w.alternative < len(bid.alternatives):
            out.append(
                Violation(
                    "alternative.index",
                    f"{path}.alternative",
                    f"bid {w.bid_id!r} has alternatives 0..{len(bid.alternatives) - 1}, "
                    f"not {w.alternative}",
                )
            )
            continue
        alt = bid.alternatives[w.alternative]
        if not _close(w.value, alt.value, ABS_TOL):
            out.append(
                Violation(
                    "winner.value",
                    f"{path}.value",
                    f"reported {w.value}, alternative {w.alternative} of {w.bid_id!r} is worth "
                    f"{alt.value}",
                )
            )
        _check_payment(w, alt, path, out)
        won.append(_Won(i, w, bid.wallet, alt))
        _check_alternative(problem, cluster, w, alt, path, out)
    return won


def _check_payment(w: Winner, alt: Alternative, path: str, out: list[Violation]) -> None:
    if not math.isfinite(w.payment):
        out.append(Violation("payment.not_finite", f"{path}.payment", f"payment is {w.payment}"))
    elif w.payment < -ABS_TOL:
        out.append(Violation("payment.negative", f"{path}.payment", f"payment is {w.payment}"))
    elif w.payment > alt.value + ABS_TOL:
        out.append(
            Violation(
                "payment.above_bid",
                f"{path}.payment",
                f"pays {w.payment}, more than its bid {alt.value}",
            )
        )


def _unit_matches(alt: Alternative, p: Placement) -> str | None:
    """Why placement ``p`` is not one replica of ``alt.unit``, or None if it is."""
    unit = alt.unit
    if p.kind != unit.kind:
        return f"a {p.kind} placement for a {unit.kind} unit"
    if unit.kind == "whole" and len(p.gpus) != unit.gpus:
        return f"{len(p.gpus)} GPUs for a unit of {unit.gpus}"
    if unit.kind == "mig" and p.mig_profile != unit.profile:
        return f"MIG profile {p.mig_profile!r} for a unit of {unit.profile!r}"
    if unit.kind == "share" and p.milli != unit.milli:
        return f"{p.milli} milli for a unit of {unit.milli}"
    return None


def _check_alternative(
    problem: Problem,
    cluster: _Cluster,
    w: Winner,
    alt: Alternative,
    path: str,
    out: list[Violation],
) -> None:
    """Gang, unit kind, capacity, CPU/memory, models, memory, locality and reserve of a winner."""
    if len(w.placements) != alt.replicas:
        out.append(
            Violation(
                "gang",
                f"{path}.placements",
                f"{len(w.placements)} placements for {alt.replicas} replicas",
            )
        )
    located: list[tuple[Placement, list[_GpuState]]] = []
    for j, p in enumerate(w.placements):
        ppath = f"{path}.placements[{j}]"
        why = _unit_matches(alt, p)
        if why is not None:
            out.append(Violation("placement.kind", ppath, why))
            continue
        problems = cluster.place(p, f"bid {w.bid_id!r} replica {j}", ppath)
        out += problems
        if p.node in cluster.nodes:
            cluster.add_resources(p.node, alt.cpu_milli, alt.memory_mib)
        states = cluster.locate(p)
        if states is not None:
            located.append((p, states))
    if not located:
        return
    _check_models(problem, alt, located, path, out)
    _check_locality(alt, located, path, out)
    _check_reserve(problem, w, alt, located, path, out)


def _check_models(
    problem: Problem,
    alt: Alternative,
    located: list[tuple[Placement, list[_GpuState]]],
    path: str,
    out: list[Violation],
) -> None:
    used = sorted({s.model.name for _, states in located for s in states})
    if len(used) > 1:
        out.append(Violation("model", f"{path}.placements", f"GPUs of several models: {used}"))
    if alt.models:
        allowed = {problem.model(name).name for name in alt.models}
        bad = [m for m in used if m not in allowed]
        if bad:
            out.append(
                Violation(
                    "model",
                    f"{path}.placements",
                    f"GPU model(s) {bad} not among the allowed {sorted(allowed)}",
                )
            )
    small = sorted(
        {
            (s.model.name, s.model.memory_gb)
            for _, states in located
            for s in states
            if s.model.memory_gb < alt.min_gpu_memory_gb
        }
    )
    if small:
        out.append(
            Violation(
                "memory",
                f"{path}.placements",
                f"GPU(s) {small} have less than the {alt.min_gpu_memory_gb} GB asked for",
            )
        )


def _check_locality(
    alt: Alternative,
    located: list[tuple[Placement, list[_GpuState]]],
    path: str,
    out: list[Violation],
) -> None:
    states = [s for _, ss in located for s in ss]
    nodes = sorted({s.node.name for s in states})
    loc = alt.locality
    why: str | None = None
    if loc == "gpu":
        gpus = sorted({(s.node.name, s.gpu.index) for s in states})
        if len(gpus) > 1:
            why = f"locality 'gpu' but the replicas use {len(gpus)} GPUs: {gpus}"
    elif loc == "nvlink":
        domains = sorted({s.gpu.nvlink or "<node>" for s in states})
        if len(nodes) > 1:
            why = f"locality 'nvlink' but the replicas span nodes {nodes}"
        elif len(domains) > 1:
            why = f"locality 'nvlink' but the GPUs are in NVLink domains {domains} of {nodes[0]!r}"
    elif loc == "node":
        if len(nodes) > 1:
            why = f"locality 'node' but the replicas span nodes {nodes}"
    elif loc in ("rack", "zone"):
        # A node without a rack (zone) is a rack (zone) of its own.
        places = {
            (s.node.rack if loc == "rack" else s.node.zone) or f"<node {s.node.name}>"
            for s in states
        }
        if len(places) > 1:
            shown = sorted(str(x) for x in places)
            why = f"locality {loc!r} but the nodes {nodes} are in {loc}(s) {shown}"
    if why is not None:
        out.append(Violation("locality", f"{path}.placements", why))


def _reserve_prices(problem: Problem) -> dict[str, float]:
    """Reserve price per canonical model name (keys may be aliases; the highest price wins)."""
    prices: dict[str, float] = {}
    for key, price in problem.reserve_prices.items():
        name = problem.model(key).name
        prices[name] = max(prices.get(name, 0.0), price)
    return prices


def _check_reserve(
    problem: Problem,
    w: Winner,
    alt: Alternative,
    located: list[tuple[Placement, list[_GpuState]]],
    path: str,
    out: list[Violation],
) -> None:
    prices = _reserve_prices(problem)
    if not prices:
        return
    needed = 0.0
    for p, states in located:
        model = states[0].model
        price = prices.get(model.name, 0.0)
        if alt.unit.kind == "whole":
            equivalent = len(p.gpus) * model.whole_equivalent
        elif alt.unit.kind == "share":
            equivalent = alt.unit.milli / 1000.0
        else:
            profile = model.profile(alt.unit.profile or "")
            if profile is None:
                continue  # reported as mig.profile
            # compute_units is not validated for extra models; fall back to memory slices.
            if model.compute_units > 0:
                equivalent = profile.compute / model.compute_units
            else:
                equivalent = profile.size / model.mig_units
        needed += price * equivalent
    if alt.value < needed - ABS_TOL * max(1.0, needed):
        out.append(
            Violation(
                "reserve",
                f"{path}.value",
                f"value {alt.value} is below the reserve {needed:.6g} of the GPUs it uses",
            )
        )


def _check_node_resources(problem: Problem, cluster: _Cluster, out: list[Violation]) -> None:
    for i, n in enumerate(problem.nodes):
        cpu = cluster.cpu_used.get(n.name, 0)
        if cpu > n.cpu_milli:
            out.append(
                Violation(
                    "cpu",
                    f"nodes[{i}].cpu_milli",
                    f"node {n.name!r}: kept incumbents and winners use {cpu} CPU milli "
                    f"of {n.cpu_milli}",
                )
            )
        mem = cluster.memory_used.get(n.name, 0)
        if mem > n.memory_mib:
            out.append(
                Violation(
                    "memory_mib",
                    f"nodes[{i}].memory_mib",
                    f"node {n.name!r}: kept incumbents and winners use {mem} MiB of {n.memory_mib}",
                )
            )


def _check_wallets(problem: Problem, won: list[_Won], out: list[Violation]) -> None:
    spent: dict[str, float] = {}
    for x in won:
        spent[x.wallet] = spent.get(x.wallet, 0.0) + x.alternative.value
    for i, wallet in enumerate(problem.wallets):
        total = spent.get(wallet.name, 0.0)
        if total > wallet.balance + ABS_TOL:
            out.append(
                Violation(
                    "wallet",
                    f"wallets[{i}]",
                    f"wallet {wallet.name!r}: winning bids worth {total} exceed the balance "
                    f"{wallet.balance}",
                )
            )


def _check_money(
    problem: Problem, result: Result, evicted: set[str], recarved: int, out: list[Violation]
) -> None:
    """Revenue is the sum of payments; welfare is won value minus what evictions destroy and
    the re-carvings' cost."""
    revenue = sum(w.payment for w in result.winners)
    if not _close(result.revenue, revenue, REL_TOL * max(1.0, abs(revenue))):
        out.append(
            Violation("revenue", "revenue", f"reported {result.revenue}, payments sum to {revenue}")
        )
    won = sum(w.value for w in result.winners)
    lost = sum(inc.value + inc.preemption_cost for inc in problem.incumbents if inc.id in evicted)
    carving = recarved * problem.reconfigure_cost
    welfare = won - lost - carving
    if not _close(result.welfare, welfare, REL_TOL * max(1.0, abs(welfare))):
        out.append(
            Violation(
                "welfare",
                "welfare",
                f"reported {result.welfare}, winners {won} - evictions {lost} - "
                f"{recarved} re-carvings {carving} = {welfare}",
            )
        )


def _check_losers(problem: Problem, result: Result, out: list[Violation]) -> None:
    bid_ids = {b.id for b in problem.bids}
    winners = {w.bid_id for w in result.winners}
    lost: Counter[str] = Counter()
    for k, loss in enumerate(result.losers):
        path = f"losers[{k}]"
        if loss.bid_id not in bid_ids:
            out.append(Violation("unknown.bid", f"{path}.bid_id", f"no bid {loss.bid_id!r}"))
            continue
        lost[loss.bid_id] += 1
        if lost[loss.bid_id] > 1:
            out.append(
                Violation("loser.duplicate", f"{path}.bid_id", f"bid {loss.bid_id!r} loses twice")
            )
        if loss.bid_id in winners:
            out.append(
                Violation(
                    "loser.is_winner", f"{path}.bid_id", f"bid {loss.bid_id!r} both wins and loses"
                )
            )
        if loss.reason not in LOSS_REASONS:
            out.append(
                Violation(
                    "loser.reason",
                    f"{path}.reason",
                    f"{loss.reason!r} is not one of {', '.join(LOSS_REASONS)}",
                )
            )
    for i, b in enumerate(problem.bids):
        if b.id not in winners and b.id not in lost:
            out.append(
                Violation("loser.missing", f"bids[{i}]", f"bid {b.id!r} neither wins nor loses")
            )


def _close(a: float, b: float, tol: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= tol
