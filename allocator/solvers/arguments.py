"""Validation of the arguments every solver shares (time limit, seed), in one place."""

from __future__ import annotations

import math

from allocator.model import ProblemError

__all__ = ["check_seed", "check_time_limit"]


def check_time_limit(time_limit: float) -> None:
    """Raise ProblemError naming ``time_limit`` unless it is a positive finite number."""
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
        raise ProblemError("time_limit", f"must be a number of seconds, got {time_limit!r}")
    if not math.isfinite(time_limit) or time_limit <= 0:
        raise ProblemError(
            "time_limit", f"must be a positive number of seconds, got {time_limit!r}"
        )


def check_seed(seed: int) -> None:
    """Raise ProblemError naming ``seed`` unless it is an integer >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ProblemError("seed", f"must be an integer >= 0, got {seed!r}")
