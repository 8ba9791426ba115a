"""The long-running loop's and the apply's arguments, and round ids (rounds run against the real
API server in tests/k8s/test_interval.py and test_faults.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from allocator.cluster.api import apply_plan
from allocator.cluster.loop import _next_round_id, run_once, run_rounds
from allocator.cluster.options import KEEP_ROUNDS, RoundOptions
from allocator.cluster.plan import Plan
from allocator.model import ProblemError
from allocator.solvers import SolveParams


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": float("inf")}, "interval"),
        ({"interval": "5"}, "interval"),
        ({"interval": True}, "interval"),
        ({"interval": 1, "max_rounds": 0}, "max_rounds"),
        ({"interval": 1, "max_rounds": 2.5}, "max_rounds"),
        ({"interval": 1, "options": RoundOptions(round_id="r-1")}, "round_id"),
        ({"interval": 1, "options": {"dry_run": True}}, "options"),
    ],
)
def test_run_rounds_rejects_bad_arguments_naming_them(
    kwargs: dict[str, object], field: str
) -> None:
    """Bad settings raise ValueError naming the field before any round (or API call) starts."""
    with pytest.raises(ValueError, match=f"^{field}: "):
        run_rounds(None, **kwargs)  # type: ignore[arg-type]


def test_round_ids_stay_unique_and_ordered_within_one_second() -> None:
    """Rounds started within the same second of the clock get -002, -003, ... suffixes: the ids
    stay unique and sort in the order the rounds ran (as unfinished_rounds replays them)."""
    ids = [_next_round_id("")]
    for _ in range(20):
        ids.append(_next_round_id(ids[-1]))
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert any(i.endswith("-012") for i in ids) or ids[0][:17] != ids[-1][:17]


def test_round_ids_of_two_processes_differ() -> None:
    """Two processes starting a round in the same second (a CronJob run beside a Deployment)
    get different ids, so neither's ledger entry stands for the other's charges."""
    code = "from allocator.cluster.loop import new_round_id; print(new_round_id(NOW))"
    now = "__import__('datetime').datetime(2026, 11, 30, 6, 8, 38)"
    ids = {
        subprocess.run(
            [sys.executable, "-c", code.replace("NOW", now)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(ids) == 2
    assert all(re.fullmatch(r"r-20261130-060838-[0-9a-f]{6}", i) for i in ids), ids


@pytest.mark.parametrize("workers", [0, -1, 2.0, True])
def test_apply_rejects_a_bad_number_of_workers(workers: object) -> None:
    """apply_plan's workers must be an integer >= 1; the error names the field before any call."""
    with pytest.raises(ValueError, match=r"^workers: "):
        apply_plan(None, Plan("r-1"), workers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"solve": {"solver": "greedy"}}, "solve"),
        ({"round_id": ""}, "round_id"),
        ({"round_id": 7}, "round_id"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"dump_snapshot": 3}, "dump_snapshot"),
        ({"lease": ("ns", "name")}, "lease"),
        ({"lease": ("ns", "", "me")}, "lease"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": 2.5}, "lease_seconds"),
        ({"record_namespace": ""}, "record_namespace"),
        ({"apply_workers": 0}, "apply_workers"),
        ({"apply_workers": True}, "apply_workers"),
        ({"keep_rounds": -1}, "keep_rounds"),
        ({"eviction_wait": -1.0}, "eviction_wait"),
        ({"eviction_wait": float("nan")}, "eviction_wait"),
        ({"eviction_wait": "45"}, "eviction_wait"),
    ],
)
def test_round_options_reject_bad_values_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    """A bad round option raises ProblemError (a ValueError) naming it, on construction and on
    replace."""
    with pytest.raises(ProblemError) as made:
        RoundOptions(**changes)  # type: ignore[arg-type]
    assert made.value.path == field
    with pytest.raises(ValueError, match=f"^{field}: "):
        RoundOptions().replace(**changes)


def test_round_options_defaults_and_replace() -> None:
    """The defaults are the CLI's; replace validates and rejects unknown names; a lease from
    JSON (a list) becomes a tuple."""
    from allocator.cluster.api import APPLY_WORKERS, EVICTION_WAIT

    opts = RoundOptions()
    assert opts.solve == SolveParams()
    assert (opts.apply_workers, opts.eviction_wait, opts.keep_rounds) == (
        APPLY_WORKERS,
        EVICTION_WAIT,
        KEEP_ROUNDS,
    )
    assert opts.round_id is None and not opts.dry_run and opts.lease is None
    later = opts.replace(round_id="r-2", lease=["ns", "name", "me"])
    assert later.round_id == "r-2" and later.lease == ("ns", "name", "me")
    assert opts.round_id is None  # frozen: replace made a copy
    with pytest.raises(ProblemError) as e:
        opts.replace(solver="greedy")
    assert e.value.path == "solver" and "not a round option" in e.value.message


def test_run_once_rejects_options_of_the_wrong_type() -> None:
    with pytest.raises(ProblemError) as e:
        run_once(None, None, {"dry_run": True})  # type: ignore[arg-type]
    assert e.value.path == "options"
