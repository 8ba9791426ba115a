"""Round options shared by the tests that run rounds against the real API server."""

from __future__ import annotations

from typing import Any

from allocator.cluster.options import RoundOptions
from allocator.solvers import SolveParams


def greedy(**options: Any) -> RoundOptions:
    """A round's options, solved by greedy (fast, and the same answer every time)."""
    return RoundOptions(solve=SolveParams(solver="greedy"), **options)
