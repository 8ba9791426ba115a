#!/usr/bin/env python3
"""A batch evaluation that must run before a deadline: bid low early, more as time runs out.

It submits one gang (``--replicas`` pods of ``--gpus`` GPUs) bidding ``--start-fraction`` x
``--value`` with ``--value`` as its most, then each round raises the bid along ``--curve``
(``linear``, ``quadratic``, ``sqrt``) to reach the value at ``--deadline``
(:class:`allocator.agent.DeadlinePolicy`).

    python examples/agents/batch_eval.py --kubeconfig agent.kubeconfig --deadline +3600
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from allocator.agent import Action, DeadlinePolicy, RoundView, Submit, WorkloadSpec
from allocator.agent.run import add_agent_arguments, run_program


def parse_deadline(text: str, now: datetime) -> datetime:
    """``+SECONDS`` from ``now``, or an ISO time with a zone (``2026-12-07T18:00:00Z``)."""
    if text.startswith("+"):
        return now + timedelta(seconds=float(text[1:]))
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"--deadline needs a time zone: {text!r}")
    return t


@dataclass
class BatchEvalPolicy:
    """Submit the evaluation once, then follow the deadline curve."""

    spec: WorkloadSpec
    deadline_policy: DeadlinePolicy
    submitted: bool = field(default=False)

    def decide(self, view: RoundView) -> list[Action]:
        """Round one: submit (unless it exists). Then: raise toward the value."""
        if not self.submitted:
            self.submitted = True
            if view.workload(self.spec.name) is None:
                return [Submit(self.spec, f"deadline {self.deadline_policy.deadline:%H:%M:%S}")]
        return self.deadline_policy.decide(view)


def make_policy(
    name: str,
    value: float,
    deadline: datetime,
    *,
    gpus: int = 1,
    replicas: int = 1,
    start_fraction: float = 0.5,
    curve: str = "linear",
    start: datetime | None = None,
) -> BatchEvalPolicy:
    """The evaluation's spec and its deadline policy."""
    spec = WorkloadSpec(
        name=name,
        bid=value * start_fraction,
        gpus=gpus,
        replicas=replicas,
        locality="node" if replicas > 1 else "any",
        max_price=value,
    )
    policy = DeadlinePolicy(
        value, deadline, start_fraction, curve=curve, start=start, workloads=[name]
    )
    return BatchEvalPolicy(spec, policy)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A batch evaluation bidding against a deadline.")
    add_agent_arguments(parser)
    parser.add_argument("--name", default="eval")
    parser.add_argument("--value", type=float, default=20.0, help="what finishing is worth")
    parser.add_argument(
        "--deadline", default="+3600", help="+SECONDS or an ISO time (default +3600)"
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per pod")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--start-fraction", type=float, default=0.5)
    parser.add_argument("--curve", default="linear", choices=["linear", "quadratic", "sqrt"])
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    try:
        deadline = parse_deadline(args.deadline, now)
        policy = make_policy(
            args.name,
            args.value,
            deadline,
            gpus=args.gpus,
            replicas=args.replicas,
            start_fraction=args.start_fraction,
            curve=args.curve,
            start=now,
        )
    except ValueError as e:
        parser.error(str(e))
    run_program(args, policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
