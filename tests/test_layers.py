"""What import-linter cannot see: the compiled core (``allocator._core``) is no Python file, so
its imports read as imports of the package itself. The checker must stay independent of it: no
module the checker imports, directly or not, imports the core."""

from __future__ import annotations

import ast
from importlib import util

import pytest

grimp = pytest.importorskip("grimp")  # comes with import-linter


def _imports_core(module: str) -> bool:
    spec = util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "allocator._core" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (
            node.module == "allocator._core"
            or (node.module == "allocator" and any(a.name == "_core" for a in node.names))
        ):
            return True
    return False


def test_the_checker_never_reaches_the_cpp_core() -> None:
    graph = grimp.build_graph("allocator")
    checker = {
        m for m in graph.modules if m == "allocator.verify" or m.startswith("allocator.verify.")
    }
    reached = set(checker)
    for m in checker:
        reached |= graph.find_upstream_modules(m)
    reached.discard("allocator")  # the package's __init__ gathers everything; nothing imports it
    assert "allocator.model" in reached
    assert not [m for m in sorted(reached) if _imports_core(m)]


def test_the_scan_sees_both_ways_of_importing_the_core() -> None:
    """The two modules that do use the core are found (the scan above has teeth)."""
    assert _imports_core("allocator.solvers.native")
    assert _imports_core("allocator.sim.replay")
    assert not _imports_core("allocator.verify.check")
