"""One allocation round end to end against the real test API server, at scale.

Protocol: start etcd + kube-apiserver and kwok (the binaries ``scripts/build-controlplane`` and
``scripts/build-agent-tools`` build; the same launcher as the end-to-end tests,
tests/k8s/conftest.py), install the chart's CRDs, create ``--nodes`` kwok GPU nodes of 8
``nvidia.com/gpu`` each (every fifth node time-sliced, i.e. shared; tests/harness/kwok.py) and
wait until kwok has made them all Ready, then ``--namespaces`` namespaces with one Wallet each,
and ``--pods`` pending pods of the allocator's scheduler (whole GPUs 1/2/4/8 and shares of 100-900
milli, bids 1-20 per GPU-equivalent, seeded). Then time one round as ``gpu-allocator run
--once`` does it, phase by phase: read (list nodes, pods, wallets), snapshot (build the Problem),
solve (greedy; first-price and, separately, critical payments), plan, apply (bindings, ledger,
events; ``--apply-workers`` API calls in flight, default 16 as ``gpu-allocator run``; 1 is
sequential). kwok runs throughout, as the kubelets would: it renews the nodes' Leases and starts
each pod as soon as it is bound (its status writes compete with the apply's calls);
``running_s`` is how long after the apply the last bound pod was seen Running. Objects are
created with a thread pool before the clock starts.

    python benchmarks/k8s_round.py --json                     # 500 nodes, 5,000 pods
    python benchmarks/k8s_round.py --apply-workers 1 --json   # apply one call at a time
    python benchmarks/k8s_round.py --nodes 50 --pods 500 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _launcher() -> Any:
    spec = importlib.util.spec_from_file_location(
        "k8s_conftest", REPO / "tests" / "k8s" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--apply-workers", type=int, default=None, help="default: as the CLI")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import yaml
    from kubernetes import client as k8s

    from allocator.cluster import snapshot
    from allocator.cluster.api import APPLY_WORKERS, apply_plan, create_wallet, fetch
    from allocator.cluster.options import RoundOptions
    from allocator.cluster.plan import plan_round
    from allocator.solvers import SolveParams, solve

    # The round's options as `gpu-allocator run --once --solver greedy` makes them; the phases
    # below are run_once's, one by one.
    options = RoundOptions(
        solve=SolveParams(solver="greedy"),
        round_id="r-bench",
        apply_workers=args.apply_workers or APPLY_WORKERS,
    )
    workers = options.apply_workers
    cp = _launcher()
    bin_dir = cp._bin_dir()
    cp._require_binaries(bin_dir)
    work = Path(tempfile.mkdtemp(prefix="k8s-bench-"))
    kwok_binary = cp._kwok_binary()
    procs = cp.ControlPlaneProcesses(bin_dir, work / "cp")
    procs.start()
    try:
        from kwok import kwok_node, wait_ready  # tests/harness, on sys.path once conftest is

        kwok = procs.start_kwok(kwok_binary)
        conn = procs.connection
        cfg = k8s.Configuration()
        cfg.host = conn.url
        cfg.ssl_ca_cert = str(conn.ca_file)
        cfg.api_key = {"authorization": f"Bearer {conn.admin_token}"}
        cfg.connection_pool_maxsize = max(workers, 8)  # as connect() does (8: setup's pool)
        api = k8s.ApiClient(cfg)
        core = k8s.CoreV1Api(api)
        ext = k8s.ApiextensionsV1Api(api)
        for path in sorted((REPO / "charts" / "gpu-allocator" / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2.0)  # CRDs established

        rng = random.Random(args.seed)
        t0 = time.perf_counter()

        def make_node(i: int) -> str:
            # 128 CPUs, 1 TiB, 250 pods, 8 nvidia.com/gpu (and 80 nvidia.com/gpu.shared)
            return str(kwok_node(api, f"gpu-{i:04d}", 8, shared=i % 5 == 0, wait=False))

        namespaces = [f"team-{i:02d}" for i in range(args.namespaces)]
        for ns in namespaces:
            core.create_namespace({"metadata": {"name": ns}})
            create_wallet(api, ns, "w", 1e6)
        pods = []
        for i in range(args.pods):
            if rng.random() < 0.35:
                milli = rng.choice([100, 200, 250, 300, 500, 700, 900])
                requests = {"nvidia.com/gpu.shared": "1", "cpu": "2"}
                ann = {"gpualloc.io/gpu-milli": str(milli)}
                eq = milli / 1000
            else:
                gpus = rng.choice([1, 1, 1, 2, 2, 4, 8])
                requests = {"nvidia.com/gpu": str(gpus), "cpu": str(4 * gpus)}
                ann = {}
                eq = gpus
            ann.update(
                {"gpualloc.io/bid": f"{eq * rng.uniform(1, 20):.2f}", "gpualloc.io/wallet": "w"}
            )
            pods.append(
                (
                    rng.choice(namespaces),
                    {
                        "metadata": {"name": f"p-{i:05d}", "annotations": ann},
                        "spec": {
                            "schedulerName": "gpu-allocator",
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "registry.invalid/none",
                                    "resources": {
                                        "requests": requests,
                                        "limits": {
                                            k: v
                                            for k, v in requests.items()
                                            if k.startswith("nvidia")
                                        },
                                    },
                                }
                            ],
                        },
                    },
                )
            )
        with ThreadPoolExecutor(8) as pool:
            node_names = list(pool.map(make_node, range(args.nodes)))
            wait_ready(api, node_names, timeout_s=600, kwok=kwok)
            list(pool.map(lambda p: core.create_namespaced_pod(p[0], p[1]), pods))
        setup_s = time.perf_counter() - t0

        times: dict[str, float] = {}
        t = time.perf_counter()
        nodes, pod_objs, wallets = fetch(api)
        times["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        snap = snapshot(nodes, pod_objs, wallets, round_id=options.round_id)
        times["snapshot_s"] = time.perf_counter() - t
        t = time.perf_counter()
        result = solve(snap.problem, params=options.solve.replace(payments="first-price"))
        times["solve_first_price_s"] = time.perf_counter() - t
        t = time.perf_counter()
        critical = solve(snap.problem, params=options.solve)  # critical payments
        times["solve_critical_s"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_round(snap, critical)
        times["plan_s"] = time.perf_counter() - t
        t = time.perf_counter()
        report = apply_plan(api, plan, options.apply_workers, options.eviction_wait)
        times["apply_s"] = time.perf_counter() - t
        bound = {b.pod for b in plan.bindings}
        running = 0
        while time.perf_counter() - t < 600:
            listed = core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
            running = sum(1 for p in listed if f"{p.metadata.namespace}/{p.metadata.name}" in bound)
            if running >= report.bound:
                break
            time.sleep(0.5)
        running_s = time.perf_counter() - t - times["apply_s"]
        out = {
            "nodes": args.nodes,
            "gpus": 8 * args.nodes,
            "apply_workers": workers,
            "pods": args.pods,
            "bids": len(snap.problem.bids),
            "winners": len(critical.winners),
            "bound": report.bound,
            "charged_wallets": report.charged,
            "events": report.events,
            "running": running,
            "running_s": round(running_s, 1),
            "problems": len(report.problems),
            "setup_s": round(setup_s, 1),
            **{k: round(v, 3) for k, v in times.items()},
            "first_price_winners": len(result.winners),
        }
        if args.json:
            print(json.dumps(out))
        else:
            for k, v in out.items():
                print(f"{k:22s} {v}")
        return 0
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
