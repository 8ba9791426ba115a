"""Fuzzed problem files: any mutation of a valid file is either rejected with a ProblemError
naming a field, or accepted and then solved into a result the checker accepts. Never a crash."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import problem_from_dict, problem_to_dict, solve, verify
from allocator.examples import demo_problem
from allocator.model import ProblemError

BASE = problem_to_dict(demo_problem())

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, -1, 0, 7, 1000, 10**9, -0.5, 10**30, 1e300, 2**63]),
    st.text(max_size=8),
    st.sampled_from(["", "3g.40gb", "4g.40gb", "1g.10gb+me", "H100-80GB", "mig", "rack", "nvlink"]),
    st.lists(st.integers(-2, 9), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``node`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = [p for p in _paths(BASE) if p]


def _mutate(data: dict[str, Any], path: tuple[Any, ...], value: Any, drop: bool) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = value


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    edits=st.lists(st.tuples(st.sampled_from(PATHS), junk, st.booleans()), min_size=1, max_size=3)
)
def test_mutated_problem_is_rejected_by_field_or_solved_validly(
    edits: list[tuple[tuple[Any, ...], Any, bool]],
) -> None:
    """A mutated file gives ProblemError with a path, or a problem whose greedy result verifies."""
    data = copy.deepcopy(BASE)
    for path, value, drop in edits:
        try:
            _mutate(data, path, value, drop)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path's parent
    try:
        problem = problem_from_dict(data)
    except ProblemError as e:
        assert e.path or "JSON" in e.message, e
        return
    result = solve(problem, solver="greedy", payments="critical")
    assert verify(problem, result) == []
