"""Plot the scale sweep: milliseconds per phase against bids, log-log.

    python benchmarks/solver_scale.py --json --sweep 100,1000,10000,100000 \\
        --payments-up-to 10000 > scale.json
    python benchmarks/plot_scale.py scale.json docs/figures/scale.png

Needs matplotlib (not a dependency of the package).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (
        ("greedy_ms", "greedy (C++)"),
        ("payments_ms", "critical payments (C++)"),
        ("explain_ms", "loss reasons (C++)"),
        ("python_overhead_ms", "Python overhead"),
        ("local_ms", "local search (1 s limit)"),
    ):
        pts = [(r["bids"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(100, color="grey", linestyle=":", linewidth=1)
    ax.axhline(1000, color="grey", linestyle="--", linewidth=1)
    ax.text(110, 110, "greedy goal 100 ms", fontsize=8, color="grey")
    ax.text(110, 1100, "payments goal 1 s", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"bids (on {rows[0]['gpus']:,} GPUs of the spot-gpu fleet)")
    ax.set_ylabel("milliseconds (median)")
    ax.set_title("Engine time per phase as the round grows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
