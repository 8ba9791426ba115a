"""The independent checker: is a :class:`~allocator.model.Result` valid for its Problem?

``verify(problem, result)`` lists every broken rule as a :class:`Violation` (empty: valid);
``check_or_raise`` raises :class:`ResultInvalid` instead. It reads only ``allocator.model`` and
must never import the solvers or the C++ core (an import-linter contract enforces that): it is the
second opinion that property tests hold every solver to.
"""

from allocator.verify.check import ResultInvalid, Violation, check_or_raise, verify

__all__ = ["ResultInvalid", "Violation", "check_or_raise", "verify"]
