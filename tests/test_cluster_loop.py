"""The long-running loop's and the apply's arguments, and round ids (rounds run against the real
API server in tests/k8s/test_interval.py and test_faults.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from allocator.cluster.api import apply_plan
from allocator.cluster.loop import _next_round_id, run_rounds
from allocator.cluster.plan import Plan


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": float("inf")}, "interval"),
        ({"interval": "5"}, "interval"),
        ({"interval": True}, "interval"),
        ({"interval": 1, "max_rounds": 0}, "max_rounds"),
        ({"interval": 1, "max_rounds": 2.5}, "max_rounds"),
        ({"interval": 1, "round_id": "r-1"}, "round_id"),
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
