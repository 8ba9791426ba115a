#!/usr/bin/env python3
"""A hyper-parameter sweep on a tight budget: many small trials, low bids, no overpaying.

It submits ``--trials`` trials (``<name>-t<i>``), each one MIG instance of the first of
``--profiles`` (or one whole GPU with ``--profiles ''``), bidding ``--bid`` each but never more
in all than ``--budget``. Each round: a waiting trial whose clearing price per GPU-equivalent
passes ``--value`` is withdrawn (a GPU-equivalent is worth no more than that to the sweep), and
one outbid in that round steps down to the next smaller profile of ``--profiles``.

    python examples/agents/research_sweep.py --kubeconfig agent.kubeconfig --trials 12
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from allocator.agent import (
    Action,
    Chain,
    RoundView,
    ShrinkWhenOutbid,
    Submit,
    WithdrawAbove,
    WorkloadSpec,
)
from allocator.agent.run import add_agent_arguments, run_program


def trial_specs(
    name: str, trials: int, bid: float, budget: float, profile: str | None
) -> list[WorkloadSpec]:
    """The trials to submit: as many as asked, each bidding ``bid``, cut so that the bids add up
    to no more than ``budget`` (each trial's bid lowered to ``budget / trials`` if need be)."""
    each = min(bid, budget / trials) if trials else 0.0
    return [WorkloadSpec(name=f"{name}-t{i}", bid=each, mig_profile=profile) for i in range(trials)]


@dataclass
class SweepPolicy:
    """Submit the trials once, then withdraw above the value and shrink when outbid."""

    specs: list[WorkloadSpec]
    value: float
    profiles: Sequence[str] = ()
    submitted: bool = field(default=False)

    def decide(self, view: RoundView) -> list[Action]:
        """Round one: the trials. Later rounds: withdraw or shrink trials as the market says."""
        if not self.submitted:
            self.submitted = True
            existing = {w.name for w in view.workloads if w.phase != "gone"}
            return [Submit(s, "sweep trial") for s in self.specs if s.name not in existing]
        names = {s.name for s in self.specs}
        return Chain(
            [
                WithdrawAbove(self.value, workloads=names),
                ShrinkWhenOutbid(profiles=self.profiles, workloads=names),
            ]
        ).decide(view)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A budget sweep of small GPU trials.")
    add_agent_arguments(parser)
    parser.add_argument("--name", default="sweep", help="trial name prefix")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--bid", type=float, default=0.5, help="bid per trial")
    parser.add_argument("--budget", type=float, default=4.0, help="most bid in all")
    parser.add_argument(
        "--value", type=float, default=2.0, help="most a GPU-equivalent is worth (withdraw above)"
    )
    parser.add_argument(
        "--profiles",
        default="3g.40gb,2g.20gb,1g.10gb",
        help="MIG profiles, largest first ('' for whole GPUs)",
    )
    args = parser.parse_args(argv)
    profiles = [p for p in args.profiles.split(",") if p]
    try:
        specs = trial_specs(
            args.name, args.trials, args.bid, args.budget, profiles[0] if profiles else None
        )
    except ValueError as e:
        parser.error(str(e))
    run_program(args, SweepPolicy(specs, args.value, profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
