#!/usr/bin/env python3
"""Run a Python script against another build of the C++ core, for old-against-new comparisons
in one session (payments, timings):

    python scripts/with_core.py /tmp/old/_core.so benchmarks/solver_scale.py --json --bids 1000

The given extension module is loaded as ``allocator._core`` before ``allocator`` is imported,
then the script runs as ``__main__`` with the remaining arguments.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import runpy
import sys
from types import ModuleType


def load_core(path: str, name: str = "allocator._core") -> ModuleType:
    """The extension module at `path`, loaded under `name` (its last part must be ``_core``)."""
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def main() -> None:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    core, script = sys.argv[1], sys.argv[2]
    sys.modules["allocator._core"] = load_core(core)
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
