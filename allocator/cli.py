"""Command line: ``gpu-allocator solve | verify | demo | schema | run | simulate | agent |
inventory``.

Exit codes: 0 success; 1 the checker found violations; 2 bad input (the message names the field).
Only argument parsing and output formatting live here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from allocator.model import (
    SOLVERS,
    PaymentAudit,
    Placement,
    Problem,
    ProblemError,
    Result,
    load_problem,
    load_result,
    result_to_dict,
)
from allocator.solvers.params import PACKINGS, PAYMENT_CHOICES, SolveParams

if TYPE_CHECKING:
    from collections.abc import Callable

    from allocator.cluster.agents import AgentSpec, CreateReport
    from allocator.cluster.config import ClusterConfig
    from allocator.cluster.inventory import NodeInventory
    from allocator.cluster.loop import RoundOutcome
    from allocator.cluster.metrics import RoundMetrics
    from allocator.cluster.options import RoundOptions
    from allocator.cluster.status import MarketStatus
    from allocator.sim.progress import ProgressEvent

__all__ = ["format_result", "main"]

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_BAD_INPUT = 2


def _where(p: Placement) -> str:
    gpus = ",".join(str(g) for g in p.gpus)
    if p.mig_profile is not None:
        return f"{p.node}/gpu{gpus}:{p.mig_profile}@{p.mig_start}"
    if p.milli:
        return f"{p.node}/gpu{gpus}:{p.milli}m"
    return f"{p.node}/gpu{gpus}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return out


def _detail(detail: Any) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in dict(detail).items()
    )


def format_audit(audit: PaymentAudit) -> str:
    """One line: how far the round's payments were from exact critical ones on its sample."""
    ratio = "n/a" if audit.revenue_ratio is None else f"{audit.revenue_ratio:.4f}"
    cut = "" if audit.complete else f" (of {audit.sampled} sampled: the time budget ran out)"
    return (
        f"audit of {audit.rule}: {audit.replayed} of {audit.winners} winners priced exactly"
        f"{cut} in {audit.time_ms:,.0f} ms: {audit.within_1pct:.0%} within 1% of their bid, "
        f"mean error {audit.mean_err:.2%}, max {audit.max_err:.2%}, "
        f"{audit.overcharged} overcharged by more than 1%, revenue ratio {ratio}"
    )


def format_result(problem: Problem, result: Result) -> str:
    """A readable report: who won what, where, at which price; who lost and why."""
    bids = {b.id: b for b in problem.bids}
    lines = [
        f"round {result.round_id}: solver {result.solver} ({result.status}), "
        f"payments {result.payment_rule}",
        *([format_audit(result.audit)] if result.audit is not None else []),
        "",
        f"Winners ({len(result.winners)} of {len(problem.bids)} bids)",
    ]
    rows = []
    for w in result.winners:
        b = bids[w.bid_id]
        a = b.alternatives[w.alternative]
        unit = {
            "whole": f"{a.unit.gpus} GPU",
            "mig": str(a.unit.profile),
            "share": f"{a.unit.milli}m share",
        }[a.unit.kind]
        rows.append(
            [
                w.bid_id,
                b.bidder,
                f"{a.replicas} x {unit}",
                f"{w.value:,.2f}",
                f"{w.payment:,.2f}",
                " ".join(_where(p) for p in w.placements),
            ]
        )
    lines += _table(["bid", "agent", "bundle", "bid value", "pays", "placement"], rows)
    if result.evicted:
        lines += ["", "Preempted: " + ", ".join(result.evicted)]
    if result.losers:
        lines += ["", f"Losers ({len(result.losers)})"]
        lines += _table(
            ["bid", "agent", "reason", "numbers"],
            [[x.bid_id, bids[x.bid_id].bidder, x.reason, _detail(x.detail)] for x in result.losers],
        )
    lines += ["", f"welfare {result.welfare:,.2f}   revenue {result.revenue:,.2f}"]
    if result.clearing_prices:
        lines.append(
            "clearing price per GPU-equivalent: "
            + ", ".join(f"{m} {p:,.2f}" for m, p in result.clearing_prices.items())
        )
    lines.append("utilisation: " + ", ".join(f"{m} {u:.0%}" for m, u in result.utilisation.items()))
    return "\n".join(lines)


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0 seconds, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    return _seconds(text, zero=False)


def _non_negative_seconds(text: str) -> float:
    return _seconds(text, zero=True)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


#: SolveParams fields that have a flag of their own, as the command line names them.
_SOLVE_FLAGS = {
    "solver": "--solver",
    "payments": "--payments",
    "packing": "--packing",
    "time_limit": "--time-limit",
    "seed": "--seed",
    "threads": "--threads",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-allocator",
        description="Clear a combinatorial GPU auction round (wallets, bids, MIG-aware packing).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve a problem JSON file")
    s.add_argument("problem", type=Path)
    _solver_args(s)
    v = sub.add_parser("verify", help="check a result against its problem")
    v.add_argument("problem", type=Path)
    v.add_argument("result", type=Path)
    d = sub.add_parser("demo", help="solve the built-in example and print who won what")
    _solver_args(d)
    d.add_argument("--dump-problem", type=Path, help="also write the example problem JSON here")
    sc = sub.add_parser("schema", help="print the JSON Schema of the problem or result file")
    sc.add_argument("which", choices=("problem", "result"))
    _run_parser(sub)
    _simulate_parser(sub)
    _agent_parser(sub)
    _inventory_parser(sub)
    _status_parser(sub)
    return p


def _status_parser(sub: Any) -> None:
    st = sub.add_parser(
        "status",
        help="the market at a glance: last rounds, clearing prices, wallets, pending bids",
    )
    st.add_argument(
        "--namespace",
        "-n",
        default="gpu-allocator",
        help="where the rounds are recorded: the namespace of run's --lease (default: "
        "gpu-allocator)",
    )
    st.add_argument(
        "--rounds", type=_positive_int, default=10, metavar="N", help="newest N rounds (10)"
    )
    st.add_argument("--scheduler-name", default="gpu-allocator", help="whose pending pods")
    st.add_argument("--json", action="store_true", help="print it as JSON")
    st.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw clearing prices and utilisation over the rounds kept (needs matplotlib)",
    )
    st.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")


def _status(args: argparse.Namespace) -> int:
    from allocator.cluster import ClusterConfig
    from allocator.cluster.api import connect
    from allocator.cluster.status import plot_status, read_status, status_to_dict

    try:
        config = ClusterConfig(scheduler_name=args.scheduler_name)
    except ValueError as e:
        raise ProblemError("--scheduler-name", str(e)) from None
    api = connect(args.kubeconfig, connections=4)
    status = read_status(api, args.namespace, args.rounds, config)
    if args.plot is not None:
        try:
            plot_status(status, args.plot)
        except RuntimeError as e:
            raise ProblemError("--plot", str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(status_to_dict(status), indent=2) + "\n")
    else:
        sys.stdout.write(format_status(status) + "\n")
    return EXIT_OK


def _ms(timing: Any, phase: str) -> str:
    return f"{timing[phase]:,.0f}" if phase in timing else "-"


def format_status(status: MarketStatus) -> str:
    """``gpu-allocator status``'s tables."""
    lines = [f"Rounds in {status.namespace} (newest first)"]
    lines += _table(
        [
            *("round", "created", "phase", "solver", "payments", "bids", "winners"),
            *("welfare", "revenue", "read ms", "solve ms", "pay ms", "apply ms"),
        ],
        [
            [
                r.name,
                r.created,
                r.phase,
                r.solver,
                r.payment_rule,
                "-" if r.bids is None else str(r.bids),
                str(r.winners),
                f"{r.welfare:,.2f}",
                f"{r.revenue:,.2f}",
                *(_ms(r.timing_ms, p) for p in ("read", "solve", "payments", "apply")),
            ]
            for r in status.rounds
        ],
    )
    models = sorted(set(status.prices) | set(status.utilisation))
    lines += ["", "Models (clearing price per GPU-equivalent: newest round with one)"]
    lines += _table(
        ["model", "price", "utilisation"],
        [
            [
                m,
                f"{status.prices[m]:,.2f}" if m in status.prices else "-",
                f"{status.utilisation[m]:.0%}" if m in status.utilisation else "-",
            ]
            for m in models
        ],
    )
    lines += ["", f"Wallets ({len(status.wallets)})"]
    lines += _table(
        ["wallet", "priority", "balance", "income", "spent", "available", "last round"],
        [
            [
                w.name,
                str(w.priority),
                f"{w.balance:,.2f}",
                f"{w.income_per_period:,.2f}/{w.period}" if w.period else "-",
                f"{w.spent:,.2f}",
                f"{w.available:,.2f}",
                w.last_round or "-",
            ]
            for w in status.wallets
        ],
    )
    lines += ["", f"Pending bids ({len(status.pending)})"]
    lines += _table(
        ["bid", "agent", "wallet", "value", "pods", "last told"],
        [
            [
                b.bid_id,
                b.bidder,
                b.wallet,
                f"{b.value:,.2f}",
                str(len(b.pods)),
                "-" if b.reason is None else f"{b.reason}: {b.message}",
            ]
            for b in status.pending
        ],
    )
    return "\n".join(lines)


def _params_arg(sp: argparse.ArgumentParser, *, flags: bool) -> None:
    more = "; the flags below override single fields of it" if flags else ""
    sp.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="solve parameters from a TOML file (any field of SolveParams: solver, payments, "
        f"time_limit, local_iterations, cpsat_work, ...; see examples/params.toml){more}",
    )


def _solver_args(sp: argparse.ArgumentParser) -> None:
    """The solve's flags; left out, each is --params' value, else SolveParams' default."""
    d = SolveParams()
    _params_arg(sp, flags=True)
    sp.add_argument("--solver", choices=SOLVERS, help=f"default: {d.solver}")
    sp.add_argument(
        "--payments",
        choices=PAYMENT_CHOICES,
        help=f"default: {d.payments} (critical up to {d.auto_critical_max_bids} bids, los above)",
    )
    sp.add_argument(
        "--packing",
        choices=PACKINGS,
        help=f"how whole and shared GPUs are packed: fgd (FGD's fragmentation growth) or pattern "
        f"(shares by the pattern linear program over the round's bids; docs/simulator.md, "
        f"'Beyond FGD'); default: {d.packing}",
    )
    sp.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help=f"wall-time limit of local search and of CP-SAT, each (default: {d.time_limit:g})",
    )
    sp.add_argument("--seed", type=int, help=f"default: {d.seed}")
    sp.add_argument(
        "--threads",
        type=_non_negative_int,
        metavar="N",
        help="threads for critical payments (0: one per CPU; same payments for any N; "
        f"default: {d.threads})",
    )
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--out", type=Path, help="write the result JSON here")


def _solve_params(args: argparse.Namespace) -> SolveParams:
    """The solve's parameters: SolveParams' defaults, then the --params file, then the flags
    given (errors name the flag, or the field and the file)."""
    base = _load_params(args.params) if args.params is not None else SolveParams()
    given = {
        name: getattr(args, name) for name in _SOLVE_FLAGS if getattr(args, name, None) is not None
    }
    try:
        return base.replace(**given)
    except ProblemError as e:
        if e.path not in given:
            raise
        message = e.message.removeprefix(f"{base.source}: ") if base.source else e.message
        raise ProblemError(_SOLVE_FLAGS[e.path], message) from None


def _run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="clear rounds on a Kubernetes cluster: read, solve, bind, evict, debit wallets",
    )
    mode = run.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one round, then exit (the CronJob)")
    mode.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="a round every SECONDS (start to start) until SIGTERM or SIGINT, which end it "
        "after the round in progress (the Deployment); a failing round is logged and the next "
        "one reads the cluster afresh; with --watch, the longest time between rounds",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="with --interval: also start a round when the bids change (a pending pod of the "
        "scheduler added, changed or deleted, a running GPU pod gone, a Wallet or a node "
        "changed), watched through the API server; --interval is then the ceiling",
    )
    run.add_argument(
        "--debounce",
        type=_non_negative_seconds,
        metavar="SECONDS",
        help="with --watch: start a round once changes have paused this long (default 0.2)",
    )
    run.add_argument(
        "--max-delay",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --watch: start a round at most this long after the first change it answers, "
        "even if changes keep coming (default 1, or --debounce if that is longer)",
    )
    run.add_argument(
        "--apply-workers",
        type=_positive_int,
        default=16,
        metavar="N",
        help="API calls an apply keeps in flight at once (default 16; evictions still come "
        "before bindings, charges after them)",
    )
    run.add_argument(
        "--eviction-wait",
        type=_non_negative_seconds,
        default=45.0,
        metavar="SECONDS",
        help="how long a round waits for evicted pods to be gone before binding into their "
        "room (default 45; the rest wait for the next round)",
    )
    run.add_argument(
        "--keep-rounds",
        type=_non_negative_int,
        default=200,
        metavar="N",
        help="with --lease: keep the newest N Applied AllocationRounds, delete older ones "
        "(default 200; 0: keep all)",
    )
    run.add_argument(
        "--max-rounds",
        type=_positive_int,
        metavar="N",
        help="with --interval: stop after N rounds",
    )
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")
    run.add_argument(
        "--metrics-port",
        type=_non_negative_int,
        metavar="PORT",
        help="with --interval: serve Prometheus metrics of the rounds on this port at /metrics "
        "(docs/kubernetes.md lists them; default: none)",
    )
    run.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="with --metrics-port: the address to listen on (default 0.0.0.0)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    run.add_argument("--dump-snapshot", type=Path, help="write the round's Problem JSON here")
    run.add_argument("--round-id", help="round id (default: r-<UTC time>-<process tag>)")
    run.add_argument("--scheduler-name", default="gpu-allocator")
    run.add_argument(
        "--mig-planning",
        action="store_true",
        help="plan MIG layouts from demand: re-carve idle MIG nodes through the GPU Operator's "
        "MIG manager (nvidia.com/mig.config; see docs/kubernetes.md)",
    )
    run.add_argument(
        "--mig-config-map",
        default="gpu-operator/gpu-allocator-mig-parted-config",
        metavar="NAMESPACE/NAME",
        help="with --mig-planning: the MIG manager's ConfigMap the configurations are added to "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--reconfigure-cost",
        type=float,
        default=1.0,
        help="with --mig-planning: welfare one GPU's re-carving costs (default 1)",
    )
    run.add_argument(
        "--mig-hold",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="with --mig-planning: keep a node's layout this long after it changed (default 1800)",
    )
    run.add_argument(
        "--lease",
        default="",
        metavar="NAMESPACE/NAME",
        help="write only while holding this coordination.k8s.io Lease (one writer at a time); "
        "rounds are then recorded as AllocationRounds in its namespace and a round left "
        "unfinished by a crash is completed first",
    )
    _solver_args(run)


def _simulate_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="replay a trace under placement policies and the auction (the FGD experiment)",
        description="Replay an openb trace as the FGD paper does (shuffled arrivals, inflated to "
        "130%% of GPU capacity, no departures) under each policy and seed; print per policy "
        "alloc_at_100, alloc_at_130 and frag_rate_at_90 (percent, mean over seeds).",
    )
    sim.add_argument(
        "--scenario",
        choices=("openb", "mixed", "mig-day"),
        default="openb",
        help="openb: the FGD experiment on a trace; mixed: inference and research agents on "
        "the spot-gpu fleet with departures (policies auction, fifo, kai); mig-day: dynamic MIG "
        "over a day on the fleet's MIG-capable GPUs (fixed layouts against planned re-carving)",
    )
    sim.add_argument("--gpus", type=int, default=None, help="mixed: GPUs of the fleet cut (512)")
    sim.add_argument("--rounds", type=int, default=None, help="mixed: rounds of 60 s (60)")
    sim.add_argument(
        "--spread",
        type=float,
        default=None,
        help="mixed: value factor (0..1) of research gangs' topology-free alternative "
        "(default 0.7; 0: strict NVLink/node locality)",
    )
    sim.add_argument(
        "--trace",
        default=None,
        help="short name(s), comma-separated: openb-default, openb-gpushare20..100, "
        "openb-multigpu20..40, or openb-all",
    )
    sim.add_argument("--nodes", type=Path, help="an openb-format node list (with --pods)")
    sim.add_argument("--pods", type=Path, help="an openb-format pod list (with --nodes)")
    sim.add_argument(
        "--policies",
        default=None,
        help="comma-separated (default: every policy of the scenario; openb: auction,random,"
        "fifo,bestfit,dotprod,gpupacking,fgd,kai,pattern, auction once per --modes; the "
        "migration variants fgd-migrate, pattern-migrate and auction-migrate only when named; "
        "mixed: auction,fifo,kai)",
    )
    sim.add_argument("--modes", default="online,batch", help="auction modes: online,batch")
    sim.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="number of seeds (openb: 42, 43, ..., default 10; mixed: 1, 2, ..., default 10; "
        "mig-day: 1, 2, ..., default 1)",
    )
    sim.add_argument("--batch", type=int, default=20, help="pods per round in batch mode")
    sim.add_argument("--jobs", type=int, default=0, help="processes (0: one per CPU)")
    sim.add_argument("--out", type=Path, help="results folder (CSV, JSON, PNG)")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="the auction's solve parameters (TOML, SolveParams fields: solver greedy or local, "
        "time_limit, alpha, seed; openb also fragment_scale, workload_hint); fields left out "
        "keep the scenario's defaults (greedy; local search 1 s per round on openb, 0.2 s mixed)",
    )
    _mig_day_args(sim)


def _mig_day_args(sim: Any) -> None:
    """The options of ``--scenario mig-day``."""
    mig = sim.add_argument_group("mig-day")
    mig.add_argument(
        "--nodes-sample",
        type=_positive_int,
        default=None,
        metavar="N",
        help="mig-day: MIG-capable nodes of the spot-gpu list, evenly spaced (default 8 nodes, "
        "64 GPUs)",
    )
    mig.add_argument(
        "--full-fleet",
        action="store_true",
        help="mig-day: all 673 MIG-capable nodes (5,384 GPUs; slow)",
    )
    mig.add_argument("--day-hours", type=float, default=24.0, help="mig-day: hours simulated")
    mig.add_argument(
        "--round-seconds", type=float, default=60.0, help="mig-day: seconds between rounds"
    )
    mig.add_argument(
        "--recarve-delay",
        type=float,
        default=60.0,
        help="mig-day: seconds a re-carved GPU is unavailable",
    )
    mig.add_argument(
        "--hold-seconds",
        type=float,
        default=1800.0,
        help="mig-day: seconds a GPU keeps a new layout before it may be re-carved again",
    )
    mig.add_argument(
        "--reconfigure-cost",
        type=float,
        default=0.3,
        help="mig-day: welfare one re-carving costs planned (value per GPU-eq-hour units)",
    )
    mig.add_argument(
        "--search-seed",
        type=int,
        default=None,
        help="mig-day: fixed-best searches its mix on this seed's day (default: the run's own)",
    )
    mig.add_argument("--plot", type=Path, metavar="FILE.png", help="mig-day: draw the day")


def _simulate(args: argparse.Namespace) -> int:
    import os

    from allocator.sim.experiment import simulate
    from allocator.sim.policies import names
    from allocator.sim.replay import DEFAULT_PARAMS
    from allocator.sim.traces import TraceError

    if args.scenario == "mixed":
        return _simulate_mixed(args)
    if args.scenario == "mig-day":
        return _simulate_mig_day(args)
    for flag, value in (
        ("--spread", args.spread),
        ("--gpus", args.gpus),
        ("--rounds", args.rounds),
    ):
        if value is not None:
            raise ProblemError(flag, "applies to --scenario mixed only")
    _no_mig_day_args(args)
    params = _simulate_params(args.params, DEFAULT_PARAMS)
    policies = args.policies.split(",") if args.policies else list(names("openb", headline=True))
    traces = [t for t in (args.trace or "").split(",") if t.strip()]
    if not traces and args.nodes is None:
        traces = ["openb-default"]
    try:
        with _ProgressBar(_show_progress(args), "openb") as bar:
            summary = simulate(
                traces,
                policies,
                10 if args.seeds is None else args.seeds,
                modes=[m for m in args.modes.split(",") if m.strip()],
                batch=args.batch,
                out_dir=args.out,
                jobs=args.jobs or (os.cpu_count() or 1),
                nodes=args.nodes,
                pods=args.pods,
                params=params,
                progress=bar.callback,
            )
    except (TraceError, ValueError) as e:
        raise ProblemError("simulate", str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return EXIT_OK
    for trace, pols in summary["traces"].items():
        sys.stdout.write(f"{trace} ({len(summary['seeds'])} seeds)\n")
        moving = any("pods_moved" in e for e in pols.values())
        rows = [
            [
                label,
                f"{e['alloc_at_100']:.2f}",
                f"{e['alloc_at_130']:.2f}",
                f"{e['frag_rate_at_90']:.1f}",
                f"{e['seconds_per_run']:.1f}",
                *(
                    [
                        f"{e['pods_moved_at_100']:.1f} ({e['moved_pct_at_100']:.2f}%)"
                        if "pods_moved" in e
                        else "-"
                    ]
                    if moving
                    else []
                ),
            ]
            for label, e in pols.items()
        ]
        heads = ["policy", "alloc_at_100", "alloc_at_130", "frag_rate_at_90", "s/run"]
        if moving:
            heads.append("moved by 100%")
        sys.stdout.write("\n".join(_table(heads, rows)) + "\n")
        ceiling = summary.get("ceilings", {}).get(trace)
        if ceiling:
            sys.stdout.write(
                f"ceiling at 100% arrived (no policy allocates more): "
                f"{ceiling['alloc_at_100']:.2f}\n"
            )
    return EXIT_OK


def _load_params(path: Path, base: SolveParams | None = None) -> SolveParams:
    """SolveParams from a --params file (its fields over ``base``, default SolveParams'
    defaults); errors name the field and the file (or --params)."""
    try:
        return SolveParams.from_toml(path, base=base)
    except ProblemError as e:
        if e.path == "params":  # the file itself: unreadable, or not TOML
            raise ProblemError("--params", e.message) from None
        raise


def _solve_and_print(problem: Problem, args: argparse.Namespace, out: TextIO) -> int:
    from allocator.solvers import solve
    from allocator.verify import verify

    result = solve(problem, params=_solve_params(args))
    data = result_to_dict(result)
    if args.out is not None:
        try:
            args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise ProblemError("--out", f"cannot write {args.out}: {e.strerror}") from None
    if args.json:
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(format_result(problem, result) + "\n")
    violations = verify(problem, result)
    for x in violations:
        print(f"violation {x.rule} at {x.path}: {x.message}", file=sys.stderr)
    return EXIT_VIOLATIONS if violations else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    debounce, max_delay = _run_timing(args)
    from allocator.cluster import ClusterConfig
    from allocator.cluster.api import connect
    from allocator.cluster.loop import run_once

    cm_namespace, _, cm_name = args.mig_config_map.partition("/")
    if not cm_namespace or not cm_name:
        raise ProblemError(
            "--mig-config-map", f"must be NAMESPACE/NAME, got {args.mig_config_map!r}"
        )
    flags = {
        "scheduler_name": "--scheduler-name",
        "mig_config_map": "--mig-config-map",
        "reconfigure_cost": "--reconfigure-cost",
        "mig_hold_s": "--mig-hold",
    }
    try:
        config = ClusterConfig(
            scheduler_name=args.scheduler_name,
            mig_planning=args.mig_planning,
            mig_config_namespace=cm_namespace,
            mig_config_map=cm_name,
            reconfigure_cost=args.reconfigure_cost,
            mig_hold_s=args.mig_hold,
        )
    except ValueError as e:
        field = str(e).partition(":")[0]
        raise ProblemError(flags.get(field, "--scheduler-name"), str(e)) from None
    options = _round_options(args)
    api = connect(args.kubeconfig, connections=args.apply_workers)
    if args.once:
        once = options.replace(round_id=args.round_id or None)  # "": a fresh id, as left out
        _print_round(run_once(api, config, once), full=True)
        return EXIT_OK
    return _run_loop(api, config, options, args, debounce, max_delay)


def _run_timing(args: argparse.Namespace) -> tuple[float, float]:
    """Check how `run`'s mode options combine; the watch's debounce and maximum delay."""
    if args.max_rounds is not None and args.interval is None:
        raise ProblemError("--max-rounds", "only with --interval")
    if args.round_id is not None and args.interval is not None:
        raise ProblemError("--round-id", "only with --once (each --interval round gets its own)")
    if args.watch and args.interval is None:
        raise ProblemError("--watch", "needs --interval SECONDS (the ceiling between rounds)")
    if args.metrics_port is not None and args.interval is None:
        raise ProblemError(
            "--metrics-port",
            "only with --interval (a --once round's figures stay on its AllocationRound)",
        )
    for option, given in (("--debounce", args.debounce), ("--max-delay", args.max_delay)):
        if given is not None and not args.watch:
            raise ProblemError(option, "only with --watch")
    debounce = 0.2 if args.debounce is None else args.debounce
    max_delay = max(1.0, debounce) if args.max_delay is None else args.max_delay
    if max_delay < debounce:
        raise ProblemError(
            "--max-delay", f"must be >= --debounce ({debounce:g}), got {max_delay:g}"
        )
    return debounce, max_delay


#: RoundOptions fields as `run` names them.
_ROUND_FLAGS = {
    "round_id": "--round-id",
    "dump_snapshot": "--dump-snapshot",
    "lease": "--lease",
    "record_namespace": "--lease",
    "apply_workers": "--apply-workers",
    "keep_rounds": "--keep-rounds",
    "eviction_wait": "--eviction-wait",
}


def _round_options(args: argparse.Namespace) -> RoundOptions:
    """`run`'s RoundOptions (no round id: --once adds --round-id, loops make their own)."""
    from allocator.cluster.options import RoundOptions

    lease = None
    if args.lease:
        ns, _, name = args.lease.partition("/")
        if not ns or not name:
            raise ProblemError("--lease", f"expected NAMESPACE/NAME, got {args.lease!r}")
        import os
        import socket

        lease = (ns, name, f"{socket.gethostname()}-{os.getpid()}")
    try:
        return RoundOptions(
            solve=_solve_params(args),
            dry_run=args.dry_run,
            dump_snapshot=args.dump_snapshot,
            lease=lease,
            record_namespace=lease[0] if lease else None,
            apply_workers=args.apply_workers,
            keep_rounds=args.keep_rounds,
            eviction_wait=args.eviction_wait,
        )
    except ProblemError as e:
        raise ProblemError(_ROUND_FLAGS.get(e.path, e.path), e.message) from None


def _run_loop(
    api: Any,
    config: ClusterConfig,
    options: RoundOptions,
    args: argparse.Namespace,
    debounce: float,
    max_delay: float,
) -> int:
    """`run --interval` (with or without --watch): rounds until SIGTERM or SIGINT."""
    import logging
    import signal
    import threading

    from allocator.cluster.loop import run_rounds, watch_rounds
    from allocator.cluster.publish import AgentClusters

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        del frame
        print(f"{signal.Signals(signum).name}: stopping after this round", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # One set of clients to the agents' own clusters for all rounds (kept while their exported
    # kubeconfigs are unchanged), instead of one per round.
    agent_clusters = AgentClusters(api)
    metrics = _start_metrics(args)

    def on_round(outcome: RoundOutcome) -> None:
        _print_round(outcome, full=False)
        if metrics is not None:
            metrics.observe(outcome)

    loop: dict[str, Any] = {
        "interval": args.interval,
        "max_rounds": args.max_rounds,
        "stop": stop,
        "on_round": on_round,
        "on_failed": None if metrics is None else (lambda _round_id: metrics.failed()),
    }
    if args.watch:
        loop |= {"debounce": debounce, "max_delay": max_delay}
    try:
        options = options.replace(agent_clusters=agent_clusters)
        summary = (watch_rounds if args.watch else run_rounds)(api, config, options, **loop)
    finally:
        agent_clusters.close()
        if metrics is not None:
            metrics.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped after {summary.rounds} rounds ({summary.failed} failed)", file=sys.stderr)
    return EXIT_OK


def _start_metrics(args: argparse.Namespace) -> RoundMetrics | None:
    """The loop's metrics, served from now on (None without --metrics-port)."""
    if args.metrics_port is None:
        return None
    from allocator.cluster.metrics import RoundMetrics

    metrics = RoundMetrics()
    try:
        metrics.serve(args.metrics_port, args.metrics_address)
    except OSError as e:
        raise ProblemError(
            "--metrics-port", f"cannot listen on {args.metrics_address}:{args.metrics_port}: {e}"
        ) from None
    print(f"metrics on http://{args.metrics_address}:{args.metrics_port}/metrics", file=sys.stderr)
    return metrics


def _print_round(outcome: RoundOutcome, *, full: bool) -> None:
    """The plan (every write with ``full``, else its one-line summary) and what was applied."""
    from allocator.cluster.plan import describe

    text = describe(outcome.plan)
    sys.stdout.write((text if full else text.partition("\n")[0]) + "\n")
    if outcome.result.audit is not None:
        sys.stdout.write(format_audit(outcome.result.audit) + "\n")
    if not outcome.leader:
        print("not the Lease holder: another run is writing; nothing applied", file=sys.stderr)
    if outcome.report is not None:
        r = outcome.report
        sys.stdout.write(
            f"applied: {r.bound} bound ({r.already_bound} already), {r.evicted} evicted, "
            f"{r.charged} wallets charged ({r.already_charged} already), {r.events} events\n"
        )
        for p in r.problems:
            print(f"problem: {p}", file=sys.stderr)
    if outcome.published is not None:
        told = outcome.published
        sys.stdout.write(
            f"agents told: {len(told.written)} of {len(told.written) + len(told.failed)}\n"
        )
        for agent, why in sorted(told.failed.items()):
            print(f"agent {agent} not reached: {why}", file=sys.stderr)
    sys.stdout.flush()


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _simulate_params(path: Path | None, defaults: SolveParams) -> SolveParams | None:
    """``--params FILE`` over the scenario's defaults (None without the option)."""
    return None if path is None else _load_params(path, base=defaults)


class _ProgressBar:
    """A tqdm bar on stderr fed by the simulator's progress events (none when not shown)."""

    def __init__(self, show: bool, desc: str, unit: str = "run") -> None:
        self.bar: Any = None
        if show:
            from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

            self.bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    @property
    def callback(self) -> Callable[[ProgressEvent], None] | None:
        return self.update if self.bar is not None else None

    def update(self, event: ProgressEvent) -> None:
        if self.bar.total != event.total:
            self.bar.total = event.total
            self.bar.refresh()
        self.bar.update(event.done - self.bar.n)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _simulate_mixed(args: argparse.Namespace) -> int:
    from allocator.sim.mixed import DEFAULT_PARAMS, DEFAULT_SPREAD
    from allocator.sim.mixed_report import simulate_mixed
    from allocator.sim.policies import names

    _no_mig_day_args(args)
    params = _simulate_params(args.params, DEFAULT_PARAMS)
    policies = args.policies.split(",") if args.policies else list(names("mixed"))
    try:
        with _ProgressBar(_show_progress(args), "mixed") as bar:
            summary = simulate_mixed(
                policies,
                10 if args.seeds is None else args.seeds,
                gpus=512 if args.gpus is None else args.gpus,
                rounds=60 if args.rounds is None else args.rounds,
                spread=DEFAULT_SPREAD if args.spread is None else args.spread,
                out_dir=args.out,
                params=params,
                progress=bar.callback,
            )
    except ValueError as e:
        raise ProblemError("simulate", str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return EXIT_OK
    heads = ["policy", "inf p99 s", "res p99 s", "alloc %", "alloc over %", "preempt", "s/round"]
    rows = [
        [
            p,
            f"{e['inference_wait_p99']:.0f}",
            f"{e['research_wait_p99']:.0f}",
            f"{100 * e['alloc_mean']:.1f}",
            f"{100 * e['alloc_over_min']:.1f}",
            f"{e['preemptions']:.0f}",
            f"{e['decision_mean_s']:.3f}",
        ]
        for p, e in summary["policies"].items()
    ]
    sys.stdout.write(f"mixed scenario ({len(summary['seeds'])} seeds)\n")
    sys.stdout.write("\n".join(_table(heads, rows)) + "\n")
    return EXIT_OK


def _no_mig_day_args(args: argparse.Namespace) -> None:
    """Refuse the mig-day options outside --scenario mig-day."""
    given = {
        "--nodes-sample": args.nodes_sample is not None,
        "--full-fleet": args.full_fleet,
        "--day-hours": args.day_hours != 24.0,
        "--round-seconds": args.round_seconds != 60.0,
        "--recarve-delay": args.recarve_delay != 60.0,
        "--hold-seconds": args.hold_seconds != 1800.0,
        "--reconfigure-cost": args.reconfigure_cost != 0.3,
        "--search-seed": args.search_seed is not None,
        "--plot": args.plot is not None,
    }
    for flag, used in given.items():
        if used:
            raise ProblemError(flag, "applies to --scenario mig-day only")


def _simulate_mig_day(args: argparse.Namespace) -> int:
    from allocator.sim.migday import DEFAULT_NODES, DEFAULT_PARAMS, MigDayConfig
    from allocator.sim.migday_report import simulate_mig_day
    from allocator.sim.policies import names

    for flag, value in (
        ("--spread", args.spread),
        ("--gpus", args.gpus),
        ("--rounds", args.rounds),
    ):
        if value is not None:
            raise ProblemError(flag, "applies to --scenario mixed only")
    if args.full_fleet and args.nodes_sample is not None:
        raise ProblemError("--full-fleet", "give either --full-fleet or --nodes-sample")
    params = _simulate_params(args.params, DEFAULT_PARAMS)
    policies = args.policies.split(",") if args.policies else list(names("mig-day"))
    try:
        config = MigDayConfig(
            nodes=None if args.full_fleet else (args.nodes_sample or DEFAULT_NODES),
            day_seconds=args.day_hours * 3600.0,
            round_seconds=args.round_seconds,
            recarve_delay=args.recarve_delay,
            hold_seconds=args.hold_seconds,
            reconfigure_cost=args.reconfigure_cost,
            search_seed=args.search_seed,
        )
        with _ProgressBar(_show_progress(args), "mig-day", unit="round") as bar:
            summary = simulate_mig_day(
                policies,
                1 if args.seeds is None else args.seeds,
                config=config,
                params=params,
                out_dir=args.out,
                plot=args.plot,
                progress=bar.callback,
            )
    except ValueError as e:
        raise ProblemError("simulate", str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return EXIT_OK
    heads = [
        "policy",
        "alloc %",
        "reconf/GPU-h",
        "inf wait p95 s",
        "inf left",
        "train left",
        "value/h",
        "s/round",
    ]
    rows = [
        [
            p,
            f"{e['alloc_gpu_eq_mean']:.1f}",
            f"{e['reconfigs_per_gpu_hour']:.3f}",
            f"{e['inference_wait_p95_s']:.0f}",
            f"{e['inference_abandoned']:.0f}",
            f"{e['training_abandoned']:.0f}",
            f"{e['value_per_hour_mean']:.1f}",
            f"{e['decision_mean_s']:.3f}",
        ]
        for p, e in summary["policies"].items()
    ]
    sys.stdout.write(
        f"mig-day ({summary['gpus']} GPUs, {len(summary['seeds'])} seed(s); allocation in % of "
        "the fleet's GPU-equivalents)\n"
    )
    sys.stdout.write("\n".join(_table(heads, rows)) + "\n")
    if "planned_minus_best_fixed" in summary:
        sys.stdout.write(
            f"planned - best fixed ({summary['best_fixed']}): "
            f"{summary['planned_minus_best_fixed']:+.1f} points\n"
        )
    return EXIT_OK


def _agent_parser(sub: Any) -> None:
    """``agent create | delete | list``: the host side of agents (allocator/cluster/agents.py)."""
    agent = sub.add_parser(
        "agent",
        help="create, delete or list agents on the host: namespace vc-NAME, Wallet, the "
        "syncer's rights, the admission policy",
        description="The host side of an agent NAME whose own control plane (a vcluster) syncs "
        "its pods into host namespace vc-NAME. Exit codes: 0 done; 1 an API call failed (what "
        "was created is listed) or --wait timed out; 2 bad input or a name that is not an "
        "agent's (nothing written).",
    )
    verbs = agent.add_subparsers(dest="agent_command", required=True)
    create = verbs.add_parser(
        "create",
        help="make agent NAME's namespace, Wallet, syncer ServiceAccount and Role, and the "
        "admission policy (once for all agents)",
    )
    create.add_argument("name", metavar="NAME", help="DNS-1123 label, <= 40 characters")
    create.add_argument("--balance", type=float, required=True, help="the Wallet's spec.balance")
    create.add_argument(
        "--income", type=float, default=0.0, help="spec.incomePerPeriod (default 0)"
    )
    create.add_argument("--period", default="24h", help="spec.period, a Go duration (24h)")
    create.add_argument("--priority", type=int, default=0, help="spec.priority, 0..1000")
    create.add_argument(
        "--scheduler-name",
        default="gpu-allocator",
        help="the allocator's scheduler name, which the admission policy requires of every "
        "agent's pod (default gpu-allocator; one for all agents)",
    )
    create.add_argument(
        "--allocator-serviceaccount",
        default="gpu-allocator/gpu-allocator",
        metavar="NAMESPACE/NAME",
        help="the allocator's ServiceAccount, which may read the agent's exported kubeconfig "
        "(Secret vc-NAME/vc-NAME); default gpu-allocator/gpu-allocator, the chart's",
    )
    create.add_argument(
        "--exist-ok",
        action="store_true",
        help="an existing agent NAME is no error: create only what is missing (its Wallet is "
        "kept as it is)",
    )
    create.add_argument(
        "--admission-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the admission policy to be enforced before the syncer "
        "gets its rights (default 30)",
    )
    create.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")
    delete = verbs.add_parser(
        "delete", help="delete agent NAME's namespace (its Wallet, rights and pods with it)"
    )
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--wait", action="store_true", help="wait until the namespace is gone")
    delete.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="with --wait: how long (default 120)",
    )
    delete.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")
    listing = verbs.add_parser(
        "list", help="every agent: Wallet, pods pending and running, exported kubeconfig"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")


# AgentSpec's parameters as the command line names them.
_AGENT_OPTIONS = {
    "name": "NAME",
    "balance": "--balance",
    "income": "--income",
    "period": "--period",
    "priority": "--priority",
    "scheduler_name": "--scheduler-name",
    "allocator_account": "--allocator-serviceaccount",
}


def _agent(args: argparse.Namespace) -> int:
    from allocator.cluster.agents import AgentError, create_agent

    try:
        spec = _agent_check(args)
        from allocator.cluster.api import connect

        api = connect(args.kubeconfig, connections=4)
        if args.agent_command == "list":
            return _agent_list(api, args)
        if args.agent_command == "delete":
            return _agent_delete(api, args)
        assert spec is not None
        created = create_agent(
            api, spec, exist_ok=args.exist_ok, admission_timeout=args.admission_timeout
        )
    except ProblemError as e:
        raise ProblemError(_AGENT_OPTIONS.get(e.path, e.path), e.message) from None
    except AgentError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.created:
            print(
                f"created before the failure: {', '.join(e.created)}; "
                f"`gpu-allocator agent delete {args.name}` removes the namespace and what is in it",
                file=sys.stderr,
            )
        return EXIT_VIOLATIONS
    _agent_created(spec, created)
    return EXIT_OK


def _agent_check(args: argparse.Namespace) -> AgentSpec | None:
    """Check `agent`'s input before any API call: the spec of `create`, the name of `delete`."""
    from allocator.cluster.agents import AgentSpec
    from allocator.cluster.config import check_agent_name

    if args.agent_command == "create":
        sa_ns, _, sa_name = args.allocator_serviceaccount.partition("/")
        if not sa_ns or not sa_name:
            raise ProblemError(
                "allocator_account",
                f"expected NAMESPACE/NAME, got {args.allocator_serviceaccount!r}",
            )
        return AgentSpec(
            name=args.name,
            balance=args.balance,
            income=args.income,
            period=args.period,
            priority=args.priority,
            scheduler_name=args.scheduler_name,
            allocator_account=(sa_ns, sa_name),
        )
    if args.agent_command == "delete":
        try:
            check_agent_name(args.name)
        except ValueError as e:
            raise ProblemError("name", str(e)) from None
    return None


def _agent_list(api: Any, args: argparse.Namespace) -> int:
    from allocator.cluster.agents import list_agents

    agents = list_agents(api)
    if args.json:
        sys.stdout.write(json.dumps([a.to_dict() for a in agents], indent=2) + "\n")
        return EXIT_OK
    if not agents:
        sys.stdout.write("no agents\n")
        return EXIT_OK

    def money(x: float | None) -> str:
        return "-" if x is None else f"{x:,.2f}"

    rows = [
        [
            a.name,
            a.namespace,
            money(a.balance),
            money(a.available),
            "-" if a.priority is None else str(a.priority),
            str(a.pending),
            str(a.running),
            {True: "yes", False: "no", None: "?"}[a.kubeconfig],
            "deleting" if a.deleting else (a.wallet_error or "ok"),
        ]
        for a in agents
    ]
    heads = ["agent", "namespace", "balance", "available", "priority", "pending"]
    heads += ["running", "kubeconfig", "status"]
    sys.stdout.write("\n".join(_table(heads, rows)) + "\n")
    return EXIT_OK


def _agent_delete(api: Any, args: argparse.Namespace) -> int:
    from allocator.cluster.agents import delete_agent

    report = delete_agent(api, args.name, wait=args.wait, timeout=args.timeout)
    print(
        f"agent {args.name}: deleting namespace {report.namespace} (its Wallet, "
        "ServiceAccounts, Roles, Service and pods go with it)"
    )
    if args.wait and not report.gone:
        print(
            f"error: namespace {report.namespace} still there after {args.timeout:g} s",
            file=sys.stderr,
        )
        return EXIT_VIOLATIONS
    if args.wait:
        print(f"namespace {report.namespace} is gone")
    return EXIT_OK


def _agent_created(spec: AgentSpec, created: CreateReport) -> None:
    from allocator.cluster.config import agent_namespace

    ns = agent_namespace(spec.name)
    print(f"agent {spec.name}: host namespace {ns}")
    if created.created:
        print("created: " + ", ".join(created.created))
    if created.existing:
        print("already there (kept as it is): " + ", ".join(created.existing))
    print(f"admission policy gpualloc-agent-pods: {created.admission}; enforced in {ns}")
    print(
        f"next: vcluster create {spec.name} -n {ns} -f deploy/vcluster/agent-values.yaml "
        f"--set exportKubeConfig.server=https://{spec.name}.{ns}:443"
    )


def _inventory_parser(sub: Any) -> None:
    inv = sub.add_parser(
        "inventory",
        help="this machine's GPUs through NVML (read-only): identity, memory, MIG mode and "
        "instances, NVLink domains; --publish writes them to the Node's annotation",
    )
    inv.add_argument("--json", action="store_true", help="the annotation's JSON document")
    inv.add_argument(
        "--publish",
        action="store_true",
        help="write the inventory to the Node's gpualloc.io/inventory annotation",
    )
    inv.add_argument(
        "--node",
        help="with --publish: the Node (default: the NODE_NAME environment variable, which the "
        "DaemonSet sets from spec.nodeName)",
    )
    inv.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --publish: read and publish every SECONDS until SIGTERM or SIGINT (the "
        "DaemonSet); a failing run after the first is logged and the next one reads afresh",
    )
    inv.add_argument("--max-runs", type=_positive_int, metavar="N", help="with --interval")
    inv.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster account)")


def _inventory(args: argparse.Namespace) -> int:
    """`inventory`: print this machine's GPUs, or publish them (once or every --interval)."""
    import os

    from allocator.cluster.inventory import InventoryError
    from allocator.cluster.nvml import load_nvml, read_inventory

    if not args.publish:
        for flag in ("node", "interval", "max_runs", "kubeconfig"):
            if getattr(args, flag) is not None:
                raise ProblemError(f"--{flag.replace('_', '-')}", "only with --publish")
    if args.max_runs is not None and args.interval is None:
        raise ProblemError("--max-runs", "only with --interval")
    node = args.node or os.environ.get("NODE_NAME", "")
    if args.publish and not node:
        raise ProblemError("--node", "--publish needs the Node's name (--node or NODE_NAME)")
    try:
        nvml = load_nvml()
        if not args.publish:
            _print_inventory(read_inventory(nvml), as_json=args.json)
            return EXIT_OK
        runs = _publish_inventory(args, node, lambda: read_inventory(nvml))
    except InventoryError as e:  # NVML or the API server refused: say why, no traceback
        print(f"error: {e}", file=sys.stderr)
        return EXIT_VIOLATIONS
    if args.interval is not None:
        print(f"stopped after {runs} runs", file=sys.stderr)
    return EXIT_OK


def _publish_inventory(
    args: argparse.Namespace, node: str, read: Callable[[], NodeInventory]
) -> int:
    """Publish once, or every --interval until SIGTERM or SIGINT; the number of runs."""
    import logging
    import signal
    import threading

    from allocator.cluster.api import connect, publish_inventory
    from allocator.cluster.nvml import publish_every

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    api = connect(args.kubeconfig, connections=1)
    stop = threading.Event()

    def publish(inv: NodeInventory) -> None:
        publish_inventory(api, node, inv)
        print(f"node {node}: {_inventory_summary(inv)}", file=sys.stderr, flush=True)

    def request_stop(signum: int, frame: Any) -> None:
        del frame
        print(f"{signal.Signals(signum).name}: stopping", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return publish_every(
            read, publish, interval=args.interval, max_runs=args.max_runs, stop=stop
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _inventory_summary(inv: NodeInventory) -> str:
    mig = [g.index for g in inv.gpus if g.mig_current]
    domains = " ".join("{" + ",".join(map(str, d)) + "}" for d in inv.nvlink_domains())
    return (
        f"published {len(inv.gpus)} GPUs, MIG on {mig or 'none'}, NVLink domains "
        f"{domains or 'none'}"
    )


def _print_inventory(inv: NodeInventory, *, as_json: bool) -> None:
    """The inventory as the annotation's JSON document, or as a table."""
    from allocator.cluster.inventory import inventory_to_dict

    if as_json:
        sys.stdout.write(json.dumps(inventory_to_dict(inv), indent=2) + "\n")
        return
    if not inv.gpus:
        sys.stdout.write("no GPUs\n")
        return
    domain_of = inv.nvlink_domain_of()

    def mig(current: bool | None, pending: bool | None) -> str:
        if current is None:
            return "-"
        text = "on" if current else "off"
        return text if pending == current else f"{text} (pending {'on' if pending else 'off'})"

    rows = [
        [
            str(g.index),
            g.pci_bus_id,
            g.product,
            g.model or "?",
            f"{g.memory_mib}",
            mig(g.mig_current, g.mig_pending),
            " ".join(f"{i.profile}@{i.start}" for i in g.mig_instances) or "-",
            ",".join(map(str, g.nvlink_peers)) or "-",
            str(domain_of[g.index]),
            g.uuid,
        ]
        for g in inv.gpus
    ]
    heads = ["gpu", "pci", "product", "model", "MiB", "mig", "instances", "nvlink"]
    heads += ["domain", "uuid"]
    lines = _table(heads, rows)
    lines.append(f"driver {inv.driver or '?'}, read at {inv.read_at.isoformat()}")
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpu-allocator`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "schema":
            text = (
                resources.files("allocator.model")
                .joinpath("schema", f"{args.which}.schema.json")
                .read_text(encoding="utf-8")
            )
            sys.stdout.write(text)
            return EXIT_OK
        if args.command == "demo":
            from allocator.examples import demo_problem
            from allocator.model import problem_to_dict

            problem = demo_problem()
            if args.dump_problem is not None:
                args.dump_problem.write_text(
                    json.dumps(problem_to_dict(problem), indent=2) + "\n", encoding="utf-8"
                )
            return _solve_and_print(problem, args, sys.stdout)
        if args.command == "solve":
            return _solve_and_print(load_problem(args.problem), args, sys.stdout)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "run":
            return _run(args)
        if args.command == "agent":
            return _agent(args)
        if args.command == "inventory":
            return _inventory(args)
        if args.command == "status":
            return _status(args)
        from allocator.verify import verify

        problem = load_problem(args.problem)
        result = load_result(args.result)
        violations = verify(problem, result)
        for x in violations:
            print(f"{x.rule} at {x.path}: {x.message}")
        if not violations:
            print(
                f"ok: {len(result.winners)} winners, {len(result.evicted)} evictions, "
                "every rule holds"
            )
        return EXIT_VIOLATIONS if violations else EXIT_OK
    except ProblemError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
