"""Agents' own control planes: how fast one is made, what it costs, and how fast a bid placed in
an agent's cluster runs there.

Protocol (the lab of the end-to-end tests, tests/harness/agentlab.py: real etcd, kube-apiserver,
vcluster syncer and kwok; run as root):
1. Start the host (etcd + kube-apiserver + kwok) with the chart's CRDs and ``--nodes`` kwok nodes
   of 8 H100s each.
2. Make ``--agents`` agents one after another: ``create_agent`` (the host side, as
   ``gpu-allocator agent create`` does it, including its wait for the admission policy) and the
   agent's control plane (etcd, kube-apiserver and syncer in a network namespace of its own)
   until its syncer serves. ``create_s`` is that time per agent, host side included.
3. With all of them up at once: resident memory of each agent's processes (etcd, API server,
   syncer), ``rss_mb_per_agent`` their mean (max reported too).
4. Start the allocator's watch-driven rounds (``watch_rounds``, ceiling ``--interval`` s between
   rounds), wait for its first round (its watches have listed), and submit ``--pods`` pods, one
   at a time, each in a random agent's own API server
   (1 GPU, bid 1); ``submit_to_running_s`` is the time from the create call to the pod seen
   ``Running`` in the agent's own API server (through the syncer to the host, a round, the
   binding, kwok, and the syncer back), polled every 50 ms.

    python benchmarks/agents.py --json                  # 10 agents, 40 pods
    python benchmarks/agents.py --agents 3 --pods 10    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "harness"))


def _percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method (p99 of 40 values is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def _progress(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import agentlab
    from kubernetes.client import CoreV1Api

    from allocator.agent import AgentClient
    from allocator.cluster.agents import AgentSpec, create_agent
    from allocator.cluster.loop import watch_rounds
    from allocator.cluster.options import RoundOptions
    from allocator.cluster.publish import AgentClusters
    from allocator.solvers import SolveParams

    bin_dir, vcluster, kwok, missing = agentlab.binaries()
    if missing:
        raise SystemExit(
            f"not built: {', '.join(str(p) for p in missing)} (run scripts/build-controlplane)"
        )
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gpualloc-agents-") as tmp:
        lab = agentlab.Lab(Path(tmp), bin_dir, vcluster, kwok)
        try:
            lab.start()
            host = lab.host_client()
            lab.install_crds()
            for i in range(args.nodes):
                agentlab.kwok_node(host, f"bench-{i}", 8)
            CoreV1Api(host).create_namespace({"metadata": {"name": "gpualloc-system"}})
            create_s: list[float] = []
            steps: dict[str, list[float]] = {}
            for i in range(args.agents):
                name = f"agent{i}"
                started = time.monotonic()
                create_agent(host, AgentSpec(name=name, balance=1e6))
                host_side = time.monotonic() - started
                timing = lab.agent(name).start()
                total = time.monotonic() - started
                create_s.append(total)
                for step, seconds in {"host-side": host_side, **timing.steps}.items():
                    steps.setdefault(step, []).append(seconds)
                _progress(f"agent {i + 1}/{args.agents} ready in {total:.2f} s", args.quiet)
            rss = [lab.agents[f"agent{i}"].rss_mb() for i in range(args.agents)]
            clients = [
                AgentClient(api_client=lab.agents[f"agent{i}"].client(), namespace="default")
                for i in range(args.agents)
            ]
            stop = threading.Event()
            clusters = AgentClusters(host)
            rounds: list[Any] = []
            options = RoundOptions(
                solve=SolveParams(),  # the defaults, as `gpu-allocator run` without flags
                record_namespace="gpualloc-system",
                agent_clusters=clusters,
            )
            loop = threading.Thread(
                target=watch_rounds,
                args=(host, None, options),
                kwargs={"interval": args.interval, "stop": stop, "on_round": rounds.append},
                daemon=True,
            )
            loop.start()
            # Steady state: the loop's first round (after its watches' first lists) is done
            # before the first pod is timed.
            agentlab.wait_for("the first round", lambda: rounds, timeout=120)
            latencies: list[float] = []
            try:
                for k in range(args.pods):
                    client = clients[rng.randrange(len(clients))]
                    core = CoreV1Api(client.api_client)
                    name = f"pod-{k}"
                    started = time.monotonic()
                    client.submit(name, bid=1.0, gpus=1)
                    agentlab.wait_for(
                        f"{name} Running",
                        lambda core=core, name=name: (
                            core.read_namespaced_pod(name, "default").status.phase == "Running"
                        ),
                        timeout=120,
                        every=0.05,
                    )
                    latencies.append(time.monotonic() - started)
                    _progress(
                        f"pod {k + 1}/{args.pods} Running after {latencies[-1]:.2f} s",
                        args.quiet,
                    )
            finally:
                stop.set()
                loop.join(timeout=60)
                clusters.close()
        finally:
            lab.close()
    return {
        "agents": args.agents,
        "create_s_p50": round(statistics.median(create_s), 3),
        "create_s_max": round(max(create_s), 3),
        "rss_mb_per_agent": round(statistics.mean(rss), 1),
        "submit_to_running_s_p50": round(statistics.median(latencies), 3),
        "submit_to_running_s_p99": round(_percentile(latencies, 0.99), 3),
        "interval_s": args.interval,
        "detail": {
            "create_s": [round(x, 3) for x in create_s],
            "create_steps_median_s": {k: round(statistics.median(v), 3) for k, v in steps.items()},
            "rss_mb": [round(x, 1) for x in rss],
            "rss_mb_max": round(max(rss), 1),
            "submit_to_running_s": [round(x, 3) for x in latencies],
            "rounds": len(rounds),
            "pods": args.pods,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--pods", type=int, default=40)
    ap.add_argument("--nodes", type=int, default=8, help="kwok nodes of 8 GPUs (default 8)")
    ap.add_argument(
        "--interval", type=float, default=10.0, help="ceiling between watch-driven rounds"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    for key in ("agents", "pods", "nodes"):
        if getattr(args, key) < 1:
            ap.error(f"--{key}: must be >= 1")
    if args.pods > args.nodes * 8:
        ap.error(f"--pods: at most --nodes x 8 = {args.nodes * 8} (each pod takes a GPU)")
    summary = run(args)
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
