"""Linear programs through OR-Tools' GLOP: one small generic call for the rest of the package.

Only :mod:`allocator.solvers` imports OR-Tools; a caller outside it that needs a linear program
(the simulator's proven ceiling, :mod:`allocator.sim.bound`) states it as matrices and calls
:func:`maximize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import pywraplp

__all__ = ["LpSolution", "maximize"]


@dataclass(frozen=True, slots=True)
class LpSolution:
    """An optimal solution: ``x`` the primal values, ``duals`` one price per row (>= 0, up to
    the solver's tolerances: what one more unit of the row's right-hand side is worth), and
    ``objective`` the value c.x."""

    x: np.ndarray
    duals: np.ndarray
    objective: float


def maximize(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> LpSolution:
    """``max c.x  s.t.  a x <= b,  x >= 0`` (``a``: rows x columns, dense) solved by GLOP.

    Floating point with GLOP's tolerances: a caller whose result must be exact checks it itself
    (the ceiling turns the duals into a certificate it verifies). Raises ``ArithmeticError``
    when the program is infeasible or unbounded, or GLOP stops without an optimum."""
    c = np.asarray(c, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.shape
    if c.shape != (n,) or b.shape != (m,):
        raise ValueError(f"shapes: a is {a.shape}, so c needs ({n},) and b ({m},)")
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        raise RuntimeError("OR-Tools has no GLOP solver")
    inf = solver.infinity()
    x = [solver.NumVar(0.0, inf, f"x{j}") for j in range(n)]
    rows = []
    for i in range(m):
        row = solver.Constraint(-inf, float(b[i]), f"r{i}")
        for j in np.flatnonzero(a[i]):
            row.SetCoefficient(x[j], float(a[i, j]))
        rows.append(row)
    objective = solver.Objective()
    for j in np.flatnonzero(c):
        objective.SetCoefficient(x[j], float(c[j]))
    objective.SetMaximization()
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        raise ArithmeticError(f"linear program: GLOP ended with status {status}, not optimal")
    return LpSolution(
        x=np.array([v.solution_value() for v in x]),
        duals=np.array([r.dual_value() for r in rows]),
        objective=float(objective.Value()),
    )
