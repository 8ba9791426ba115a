"""The generic linear program call (allocator.solvers.lp): optimum, duals, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.solvers.lp import maximize


def test_optimum_and_duals_of_a_small_program() -> None:
    """max 3x + 2y s.t. x + y <= 4, x + 3y <= 6, x <= 3: optimum 11 at (3, 1); the duals are
    feasible for the dual program and their objective is the primal's (strong duality)."""
    a = np.array([[1.0, 1.0], [1.0, 3.0], [1.0, 0.0]])
    b = np.array([4.0, 6.0, 3.0])
    c = np.array([3.0, 2.0])
    sol = maximize(c, a, b)
    assert sol.objective == pytest.approx(11.0)
    assert sol.x == pytest.approx([3.0, 1.0])
    assert (sol.duals >= -1e-9).all()
    assert (a.T @ sol.duals >= c - 1e-9).all()
    assert float(b @ sol.duals) == pytest.approx(11.0)


def test_a_slack_row_has_no_price() -> None:
    """A row that does not bind at the optimum is worth nothing."""
    sol = maximize(np.array([1.0]), np.array([[1.0], [1.0]]), np.array([2.0, 5.0]))
    assert sol.objective == pytest.approx(2.0)
    assert sol.duals == pytest.approx([1.0, 0.0])


def test_infeasible_unbounded_and_bad_shapes_are_refused() -> None:
    with pytest.raises(ArithmeticError, match="not optimal"):
        maximize(np.array([1.0]), np.array([[1.0]]), np.array([-1.0]))
    with pytest.raises(ArithmeticError, match="not optimal"):
        maximize(np.array([1.0, 1.0]), np.array([[1.0, 0.0]]), np.array([1.0]))
    with pytest.raises(ValueError, match="shapes"):
        maximize(np.array([1.0]), np.array([[1.0, 2.0]]), np.array([1.0]))
