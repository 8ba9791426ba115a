"""The agent's loop: once per round, look, let the policy decide, apply what it decided."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from allocator.agent.client import AgentClient
from allocator.agent.policy import (
    Action,
    Keep,
    Policy,
    RaiseBid,
    RoundView,
    Shrink,
    Submit,
    Withdraw,
)
from allocator.model import ProblemError

__all__ = [
    "RoundLog",
    "add_agent_arguments",
    "apply_action",
    "describe_action",
    "print_round",
    "run_agent",
    "run_program",
]

log = logging.getLogger("allocator.agent")


@dataclass(frozen=True)
class RoundLog:
    """What the loop did in one round: the policy's actions, a line per action applied, and a
    line per action that failed (the loop goes on)."""

    round_id: str
    actions: tuple[Action, ...]
    applied: tuple[str, ...]
    errors: tuple[str, ...]


def describe_action(a: Action) -> str:
    """One line saying what ``a`` does."""
    why = f" ({a.reason})" if a.reason else ""
    if isinstance(a, RaiseBid):
        return f"raise bid of {a.name} to {a.value:.6g}{why}"
    if isinstance(a, Withdraw):
        return f"withdraw {a.name}{why}"
    if isinstance(a, Shrink):
        what = []
        if a.replicas is not None:
            what.append(f"{a.replicas} replicas")
        if a.mig_profile is not None:
            what.append(f"MIG {a.mig_profile}")
        if a.bid is not None:
            what.append(f"bid {a.bid:.6g}")
        return f"shrink {a.name} to {', '.join(what) or 'the same'}{why}"
    if isinstance(a, Submit):
        s = a.spec
        unit = {
            "whole": f"{s.gpus} GPU",
            "mig": f"{s.gpus} x MIG {s.mig_profile}",
            "share": f"{s.milli} milli-GPU",
        }[s.kind]
        return f"submit {s.name}: {s.replicas} x {unit}, bid {s.bid:.6g}{why}"
    return f"keep {a.name or 'everything'}{why}"


def apply_action(client: AgentClient, view: RoundView, a: Action) -> str:
    """Apply one action through ``client`` and say what was done. A RaiseBid above the
    workload's ``max_price`` is capped at it."""
    if isinstance(a, RaiseBid):
        value = a.value
        w = view.workload(a.name)
        if w is not None and w.spec is not None and w.spec.max_price is not None:
            value = min(value, w.spec.max_price)
        n = client.set_bid(a.name, value)
        capped = " (capped at max_price)" if value < a.value else ""
        return f"{describe_action(RaiseBid(a.name, value, a.reason))}: {n} pod(s){capped}"
    if isinstance(a, Withdraw):
        n = client.withdraw(a.name)
        return f"{describe_action(a)}: {n} pod(s) deleted"
    if isinstance(a, Shrink):
        resized = client.resize(a.name, replicas=a.replicas, mig_profile=a.mig_profile, bid=a.bid)
        return f"{describe_action(a)}: now {len(resized.pods)} pod(s)"
    if isinstance(a, Submit):
        created = client.submit_spec(a.spec)
        return f"{describe_action(a)}: {len(created.pods)} pod(s) created"
    assert isinstance(a, Keep)
    return describe_action(a)


def _stopper(stop: Callable[[], bool] | threading.Event | None) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


def run_agent(
    client: AgentClient,
    policy: Policy,
    *,
    rounds: int | None = None,
    stop: Callable[[], bool] | threading.Event | None = None,
    timeout: float = 600.0,
    poll: float = 1.0,
    clock: Callable[[], datetime] | None = None,
    on_round: Callable[[RoundLog], Any] | None = None,
) -> list[RoundLog]:
    """Each time the market ConfigMap reports a new round (the first time: the round it
    reports now), build the :class:`RoundView`, ask ``policy``, apply its actions and log each
    (logger ``allocator.agent``). Stops after ``rounds`` rounds (None: never), when ``stop``
    (a callable or an Event) says so, or with TimeoutError when no new round comes within
    ``timeout`` seconds. An action that fails is logged and the loop goes on; a malformed
    ConfigMap skips that round. ``clock`` gives the view's time (default: now, UTC);
    ``on_round`` is called with each round's log. Returns the logs."""
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds: must be >= 1 or None, got {rounds!r}")
    should_stop = _stopper(stop)
    now = clock or (lambda: datetime.now(UTC))
    logs: list[RoundLog] = []
    last: str | None = None
    while (rounds is None or len(logs) < rounds) and not should_stop():
        try:
            last = client.wait_for_round(last, timeout, poll=poll, stop=should_stop)
        except InterruptedError:
            break
        try:
            view = client.view(last, now())
        except ProblemError as e:
            log.error("round %s: market ConfigMap malformed, round skipped: %s", last, e)
            logs.append(RoundLog(last, (), (), (f"market ConfigMap: {e}",)))
            continue
        actions = tuple(policy.decide(view))
        applied: list[str] = []
        errors: list[str] = []
        for a in actions:
            try:
                line = apply_action(client, view, a)
            except Exception as e:  # an API answer, a race with the allocator: go on
                errors.append(f"{describe_action(a)}: {type(e).__name__}: {e}")
                log.warning("round %s: %s", last, errors[-1])
                continue
            applied.append(line)
            log.info("round %s: %s", last, line)
        if not actions:
            log.info("round %s: nothing to do", last)
        record = RoundLog(last, actions, tuple(applied), tuple(errors))
        logs.append(record)
        if on_round is not None:
            on_round(record)
    return logs


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every agent program takes: ``--kubeconfig``, ``--namespace``, ``--rounds``,
    ``--timeout``, ``--poll``."""
    parser.add_argument("--kubeconfig", help="the agent's kubeconfig (default: the usual)")
    parser.add_argument("--namespace", default="default", help="where its pods live")
    parser.add_argument(
        "--rounds", type=int, default=None, help="stop after this many rounds (default: never)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for a round (default 600)"
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, help="seconds between looks at the market ConfigMap"
    )


def print_round(record: RoundLog) -> None:
    """Print what a round did, one line per action (the agent programs' output)."""
    print(f"round {record.round_id}:", flush=True)
    for line in record.applied:
        print(f"  {line}", flush=True)
    for line in record.errors:
        print(f"  FAILED {line}", flush=True)
    if not record.applied and not record.errors:
        print("  nothing to do", flush=True)


def run_program(args: argparse.Namespace, policy: Policy) -> list[RoundLog]:
    """Run ``policy`` with the options of :func:`add_agent_arguments`, printing each round."""
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit("--rounds: must be >= 1")
    client = AgentClient(args.kubeconfig, args.namespace)
    return run_agent(
        client,
        policy,
        rounds=args.rounds,
        timeout=args.timeout,
        poll=args.poll,
        on_round=print_round,
    )
