#!/usr/bin/env python3
"""Old against new build of the C++ core in one process: CPU time of one payment call on the same
round, the builds called in turn (alternating which goes first), median per build and median
ratio new/old per round.

    python scripts/core_timing.py /tmp/old/_core.so /tmp/new/_core.so --rule los --rounds 21

Two pybind11 modules share one type registry per internals id, so a second build loaded into the
same process either fails ("type ... is already registered") or, loaded under the same name,
silently is the first one again. Build one of the two with an id of its own, e.g.
``cmake ... "-DCMAKE_CXX_FLAGS=-DPYBIND11_COMPILER_TYPE=\\"_old\\""`` (only the bindings read
it). The round: the spot-gpu fleet cut to ``--gpus`` GPUs with ``--bids`` bids (seed ``--seed``),
as ``benchmarks/solver_scale.py`` builds it; the payments of the two builds must be equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from with_core import load_core


def load_native(path: str, tag: str) -> ModuleType:
    """allocator/solvers/native.py executed afresh against the core at `path`."""
    core = load_core(path, f"core_timing_{tag}._core")
    sys.modules["allocator._core"] = core
    import allocator

    allocator._core = core  # type: ignore[attr-defined]
    source = Path(allocator.__file__).parent / "solvers" / "native.py"
    spec = importlib.util.spec_from_file_location(f"core_timing_native_{tag}", source)
    assert spec is not None and spec.loader is not None
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    if native._core is not core:
        raise SystemExit(f"{path}: native.py did not bind this build")
    return native


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rule", choices=("los", "critical"), default="los")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--bids", type=int, default=10000)
    ap.add_argument("--gpus", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    builds = {"old": load_native(args.old, "old"), "new": load_native(args.new, "new")}
    from allocator.instances import fleet_problem
    from allocator.sim.traces import data_dir

    fleet = data_dir() / "spot-gpu" / "node_info_df.csv"
    problem = fleet_problem(fleet, args.bids, args.seed, gpus=args.gpus, round_id="timing")
    calls: dict[str, Any] = {}
    for tag, native in builds.items():
        engine = native.NativeEngine(problem)
        columns = engine.to_columns(engine.to_allocation(engine.core.greedy()))
        if args.rule == "los":
            calls[tag] = lambda core=engine.core, c=columns: core.los_payments(c)
        else:
            calls[tag] = lambda core=engine.core, c=columns: core.critical_payments(c, 1)
    ms: dict[str, list[float]] = {"old": [], "new": []}
    first = None
    for r in range(args.rounds):
        for tag in ("old", "new") if r % 2 == 0 else ("new", "old"):
            t = time.process_time()
            pay = list(calls[tag]())
            ms[tag].append((time.process_time() - t) * 1000.0)
            if first is None:
                first = pay
            elif pay != first:
                raise SystemExit(f"payments differ ({tag}, round {r})")
    ratios = [n / o for n, o in zip(ms["new"], ms["old"], strict=True)]
    print(
        f"{args.rule} at {args.bids} bids on {args.gpus} GPUs, seed {args.seed}, "
        f"{args.rounds} rounds: old {statistics.median(ms['old']):.1f} ms, "
        f"new {statistics.median(ms['new']):.1f} ms CPU (medians), "
        f"ratio new/old per round {statistics.median(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
