"""Proven ceiling of the FGD experiment: the most any policy can allocate at 100% arrived.

For each trace and seed (the experiment's seeded arrival order, seeds 42, 43, ...), the bound of
``allocator.sim.bound`` on the pods arrived at 100% of GPU capacity: GPU-level packing with
dual feasible functions, nodes, CPU and models relaxed. Prints one line per trace, or with
``--json`` one object: per trace the bound's mean, min and max over seeds (percent of capacity)
and the threshold t of the function that gave it.

    python benchmarks/openb_bound.py --json
    python benchmarks/openb_bound.py --trace openb-all --seeds 10 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from allocator.sim import TraceError, load_openb_nodes, load_openb_pods, resolve_trace
from allocator.sim.bound import bound_at_arrived
from allocator.sim.experiment import expand_traces


def measure(trace: str, seeds: int, arrived: float) -> dict[str, Any]:
    nodes, pods_file = resolve_trace(trace)
    cluster = load_openb_nodes(nodes)
    pods = load_openb_pods(pods_file, cluster)
    bounds = [
        bound_at_arrived(pods, int(cluster.total_gpus), 42 + i, arrived) for i in range(seeds)
    ]
    pct = [b.percent for b in bounds]
    idle = sorted(
        (
            (list(p), round(n, 1), round(n * (1000 - sum(p)) / 1000, 1))
            for p, n in bounds[0].packing
        ),
        key=lambda row: -row[2],
    )
    return {
        "trace": trace,
        "seeds": seeds,
        "arrived": arrived,
        "bound_mean": round(statistics.fmean(pct), 3),
        "bound_min": round(min(pct), 3),
        "bound_max": round(max(pct), 3),
        "idle_patterns": [r for r in idle if r[2] >= 1.0][:6],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="openb-default", help="short name(s), comma-separated")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--arrived", type=float, default=100.0, help="arrived workload, percent")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.seeds < 1:
        print("error: --seeds: need at least 1", file=sys.stderr)
        return 2
    if not 0 < args.arrived <= 130:
        print("error: --arrived: need a percentage in (0, 130]", file=sys.stderr)
        return 2
    try:
        traces = expand_traces(args.trace.split(","))
    except TraceError as e:
        print(f"error: --trace: {e}", file=sys.stderr)
        return 2
    rows = [measure(t, args.seeds, args.arrived) for t in traces]
    if args.json:
        print(json.dumps({"traces": rows}))
    else:
        for r in rows:
            print(
                f"{r['trace']}: at {r['arrived']:g}% arrived no policy allocates more than "
                f"{r['bound_max']}% (mean {r['bound_mean']}, min {r['bound_min']}, "
                f"{r['seeds']} seeds); idle in its packing: "
                + ", ".join(
                    f"{'+'.join(map(str, p))} x {n} ({i} GPU)" for p, n, i in r["idle_patterns"]
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
