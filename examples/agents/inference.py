#!/usr/bin/env python3
"""An inference service that keeps its latency target by scaling GPU replicas, bidding high.

Model: each replica serves ``--service-rate`` requests/s; the load (requests/s) is split evenly
over the c replicas, each an M/M/1 queue, whose mean latency is 1 / (mu - load / c). Meeting a
target T needs load / c <= mu - 1/T, so c = ceil(load / (mu - 1/T)), never below
``--min-replicas``. Each replica is a workload ``<name>-r<i>`` of its own (one GPU, or one MIG
instance with ``--mig-profile``), so that each can win on its own. A new replica bids
``--start-fraction`` x ``--value``; one that is outbid raises halfway to its value each round
(to the value once within 1%); replicas beyond the need are withdrawn, waiting ones first.

The load comes from ``--load-file`` (a number, read every round; a test or a monitor writes it)
or ``--schedule`` (``ROUND:LOAD,...``: from that round on, that load).

    python examples/agents/inference.py --kubeconfig agent.kubeconfig --schedule 0:20,3:150
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from allocator.agent import (
    Action,
    Keep,
    RaiseBid,
    RoundView,
    Submit,
    Withdraw,
    WorkloadSpec,
)
from allocator.agent.run import add_agent_arguments, run_program


def replicas_needed(load: float, service_rate: float, target_s: float, minimum: int = 1) -> int:
    """Replicas whose M/M/1 queues keep the mean latency at ``target_s`` under ``load``."""
    headroom = service_rate - 1.0 / target_s
    if headroom <= 0:
        raise ValueError("the target is below one replica's unloaded latency (1 / service rate)")
    return max(minimum, math.ceil(load / headroom - 1e-9))


def parse_schedule(text: str) -> Callable[[int], float]:
    """``0:20,3:150,6:20`` -> round index -> load (each entry holds from its round on)."""
    steps = []
    for part in text.split(","):
        start, _, load = part.partition(":")
        steps.append((int(start), float(load)))
    steps.sort()
    if not steps or steps[0][0] != 0:
        raise ValueError("--schedule must start at round 0 (e.g. 0:20,3:150)")

    def load_at(index: int) -> float:
        return [load for start, load in steps if start <= index][-1]

    return load_at


def file_load(path: Path) -> Callable[[int], float]:
    """A load read from ``path`` each round (the last good value when it cannot be read)."""
    last = [0.0]

    def load_at(index: int) -> float:
        with contextlib.suppress(OSError, ValueError):
            last[0] = float(path.read_text().strip())
        return last[0]

    return load_at


@dataclass
class InferencePolicy:
    """Scale replicas of ``name`` to the latency target (see the module docstring)."""

    name: str
    value: float
    service_rate: float
    target_s: float
    load_at: Callable[[int], float]
    start_fraction: float = 0.8
    min_replicas: int = 1
    mig_profile: str | None = None
    rounds_seen: int = field(default=0)

    def decide(self, view: RoundView) -> list[Action]:
        """This round's actions for the load of this round."""
        load = self.load_at(self.rounds_seen)
        self.rounds_seen += 1
        need = replicas_needed(load, self.service_rate, self.target_s, self.min_replicas)
        return scale(view, self, need, load)


def scale(view: RoundView, p: InferencePolicy, need: int, load: float) -> list[Action]:
    """The actions that bring ``p.name``'s replicas to ``need`` and keep their bids high."""
    prefix = f"{p.name}-r"
    mine = [
        w
        for w in view.workloads
        if w.name.startswith(prefix) and w.name[len(prefix) :].isdigit() and w.phase != "gone"
    ]
    actions: list[Action] = []
    have = len(mine)
    why = f"load {load:g}/s needs {need} replica(s), {have} live"
    if have > need:
        # Withdraw the surplus: waiting replicas first, then the highest indices.
        order = sorted(mine, key=lambda w: (w.phase == "running", -int(w.name[len(prefix) :])))
        actions += [Withdraw(w.name, why) for w in order[: have - need]]
        mine = order[have - need :]
    elif have < need:
        used = {int(w.name[len(prefix) :]) for w in mine}
        free = (i for i in range(10_000) if i not in used)
        for _ in range(need - have):
            spec = WorkloadSpec(
                name=f"{prefix}{next(free)}",
                bid=p.value * p.start_fraction,
                mig_profile=p.mig_profile,
                max_price=p.value,
            )
            actions.append(Submit(spec, why))
    for w in mine:
        o = w.outcome
        if w.phase == "lost-and-pending" and o is not None and o.outcome == "outbid":
            bid = w.bid or 0.0
            raised = bid + (p.value - bid) / 2
            if p.value - raised <= 0.01 * p.value:
                raised = p.value
            if raised > bid:
                actions.append(RaiseBid(w.name, raised, f"outbid at {bid:g}"))
                continue
        actions.append(Keep(w.name, f"{w.phase}; {why}"))
    return actions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="An inference service scaling GPU replicas to a latency target."
    )
    add_agent_arguments(parser)
    parser.add_argument("--name", default="inference", help="workload name prefix")
    parser.add_argument("--value", type=float, default=40.0, help="what a replica is worth")
    parser.add_argument("--start-fraction", type=float, default=0.8, help="first bid / value")
    parser.add_argument(
        "--service-rate", type=float, default=50.0, help="requests/s a replica serves"
    )
    parser.add_argument("--target-ms", type=float, default=100.0, help="mean latency target")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--mig-profile", help="one MIG instance per replica instead of a GPU")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--load-file", type=Path, help="file holding the current load (req/s)")
    load.add_argument("--schedule", default="0:20", help="ROUND:LOAD,... (default 0:20)")
    args = parser.parse_args(argv)
    try:
        load_at = file_load(args.load_file) if args.load_file else parse_schedule(args.schedule)
        replicas_needed(0, args.service_rate, args.target_ms / 1000)
    except ValueError as e:
        parser.error(str(e))
    policy = InferencePolicy(
        name=args.name,
        value=args.value,
        service_rate=args.service_rate,
        target_s=args.target_ms / 1000,
        load_at=load_at,
        start_fraction=args.start_fraction,
        min_replicas=args.min_replicas,
        mig_profile=args.mig_profile,
    )
    run_program(args, policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
