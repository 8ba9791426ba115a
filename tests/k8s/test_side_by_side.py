"""The default scheduler and the allocator side by side on two copies of one fake GPU cluster
(kwok nodes advertising nvidia.com/gpu as the device plugin does; kwok runs the pods bound there
and finishes the evicted ones, as their kubelets would) and one workload: research
pods submitted first fill the cluster, inference pods arrive after. kube-scheduler (no priority
classes: the queue's habit) leaves inference pending; the allocator's next round evicts research
that is worth less and places every inference pod. The figures are printed for
docs/benchmarks.md."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

import allocator.cluster.loop as loop  # noqa: E402
from allocator.cluster.api import create_wallet  # noqa: E402

pytestmark = pytest.mark.k8s
GPU = "nvidia.com/gpu"
NODES, GPUS_PER_NODE = 2, 4
RESEARCH, RESEARCH_GPUS, INFERENCE = 4, 2, 4


def _pod(name: str, gpus: int, scheduler: str, copy: str, ann: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": ann},
        "spec": {
            "schedulerName": scheduler,
            "nodeSelector": {"copy": copy},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/none",
                    "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}},
                }
            ],
        },
    }


def _placed(core: CoreV1Api, ns: str, prefix: str) -> list[Any]:
    return [
        p
        for p in core.list_namespaced_pod(ns).items
        if p.metadata.name.startswith(prefix)
        and p.spec.node_name
        and p.metadata.deletion_timestamp is None
    ]


def _gpus(pods: list[Any]) -> int:
    return sum(int(p.spec.containers[0].resources.requests[GPU]) for p in pods)


def test_default_scheduler_and_allocator_side_by_side(
    api_client: Callable[[str], Any],
    control_plane: Any,
    control_plane_processes: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    gpu_world: Any,
) -> None:
    """Same cluster, same arrivals: kube-scheduler places 0 of 4 late inference pods, the
    allocator places all 4 in one round by evicting cheaper research; both keep 8/8 GPUs busy."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    tag = uuid.uuid4().hex[:6]
    copies = {"sched": f"sched-{tag}", "alloc": f"alloc-{tag}"}
    for copy in copies.values():
        core.create_namespace({"metadata": {"name": copy}})
        for i in range(NODES):  # Ready and schedulable
            gpu_world.kwok_node(admin, f"{copy}-n{i}", GPUS_PER_NODE, labels={"copy": copy})
    total = NODES * GPUS_PER_NODE

    # Copy 1: the real kube-scheduler.
    control_plane_processes.start_scheduler()
    ns = copies["sched"]
    for i in range(RESEARCH):
        core.create_namespaced_pod(
            ns, _pod(f"research-{i}", RESEARCH_GPUS, "default-scheduler", ns, {})
        )
    deadline = time.monotonic() + 60
    while len(_placed(core, ns, "research")) < RESEARCH:
        assert time.monotonic() < deadline, "kube-scheduler did not place the research pods"
        time.sleep(0.2)
    for i in range(INFERENCE):
        core.create_namespaced_pod(ns, _pod(f"inference-{i}", 1, "default-scheduler", ns, {}))
    time.sleep(5)  # several scheduling cycles; nothing fits without preemption
    sched_inference = len(_placed(core, ns, "inference"))
    sched_gpus = _gpus(_placed(core, ns, ""))

    # Copy 2: the allocator, one round per wave.
    ns = copies["alloc"]
    for wallet in ("research", "inference"):
        create_wallet(admin, ns, wallet, 100)
    real_fetch = loop.fetch

    def only_copy(api: Any, config: Any = None) -> Any:
        nodes, pods, wallets = real_fetch(api, config)
        return (
            [n for n in nodes if n["metadata"]["labels"].get("copy") == ns],
            [p for p in pods if p["metadata"]["namespace"] == ns],
            [w for w in wallets if w["metadata"]["namespace"] == ns],
        )

    monkeypatch.setattr(loop, "fetch", only_copy)
    research_bid = {"gpualloc.io/bid": str(RESEARCH_GPUS), "gpualloc.io/wallet": "research"}
    for i in range(RESEARCH):
        core.create_namespaced_pod(
            ns, _pod(f"research-{i}", RESEARCH_GPUS, "gpu-allocator", ns, research_bid)
        )
    first = loop.run_once(admin, options=greedy(round_id=f"r1-{tag}"))
    assert first.report is not None and first.report.bound == RESEARCH, first.report
    inference_bid = {"gpualloc.io/bid": "10", "gpualloc.io/wallet": "inference"}
    for i in range(INFERENCE):
        core.create_namespaced_pod(
            ns, _pod(f"inference-{i}", 1, "gpu-allocator", ns, inference_bid)
        )
    second = loop.run_once(admin, options=greedy(round_id=f"r2-{tag}"))  # kwok finishes evictions
    assert second.report is not None and second.report.problems == [], second.report.problems
    alloc_inference = len(_placed(core, ns, "inference"))
    alloc_gpus = _gpus(_placed(core, ns, ""))
    evicted = second.report.evicted

    with capsys.disabled():
        print(
            f"\nside by side ({NODES} nodes x {GPUS_PER_NODE} GPUs, {RESEARCH} research pods x "
            f"{RESEARCH_GPUS} GPUs first, then {INFERENCE} one-GPU inference pods):\n"
            f"  kube-scheduler: GPUs allocated {sched_gpus}/{total}, inference placed "
            f"{sched_inference}/{INFERENCE}\n"
            f"  gpu-allocator:  GPUs allocated {alloc_gpus}/{total}, inference placed "
            f"{alloc_inference}/{INFERENCE} in one round, research evicted {evicted}"
        )
    assert sched_gpus == total and sched_inference == 0, (sched_gpus, sched_inference)
    assert alloc_inference == INFERENCE and alloc_gpus == total and evicted == 2, (
        alloc_inference,
        alloc_gpus,
        evicted,
    )
