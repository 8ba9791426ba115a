"""kwok (sigs.k8s.io/kwok, built by scripts/build-agent-tools) as the kubelets of fake GPU nodes,
and those nodes as NVIDIA's device plugin and GPU Feature Discovery (GFD) advertise them.

kwok manages only the nodes annotated ``kwok.x-k8s.io/node=fake``, with kwok's own stages (read
from the Go module cache at the release tests/kwok/go.mod pins): a new node becomes Ready (its
``status.allocatable`` and ``capacity`` kept as created: the stage fills them only where they are
empty) and then heartbeats (a Lease renewed every 10 s, conditions every 10 minutes), a pod bound
to it becomes Running and Ready, a pod being deleted is removed (grace period 0) at once, as a
kubelet does once the containers have stopped. No node lifecycle controller runs in the tests, so
:func:`wait_ready` removes the not-ready taint admission puts on every new node once kwok reports
it Ready, as that controller would.

Shared by tests/k8s/conftest.py (the session's kwok), tests/harness/agentlab.py (the lab host's)
and benchmarks/k8s_round.py. Import it after putting tests/harness on ``sys.path``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from processes import Server
from tools import module_dir

NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: kwok's stages (its kustomize/stage folder): nodes become Ready and heartbeat, pods bound to them
#: Running, pods being deleted are removed. No pod-complete stage: a pod runs until deleted.
STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
)
#: The pods' addresses (kwok hands them out; nothing routes to them). Apart from the tests'
#: service ranges (10.0.0.0/16 and below).
POD_CIDR = "10.244.0.0/16"
LEASE_SECONDS = 40
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def argv(binary: Path, kubeconfig: Path, *, node_ip: str | None = None) -> list[str]:
    """kwok's command line: the API server of ``kubeconfig``, the nodes annotated
    ``kwok.x-k8s.io/node=fake`` only, :data:`STAGES`, node leases, no server of its own."""
    stages = module_dir("kwok", "sigs.k8s.io/kwok") / "kustomize" / "stage"
    args = [
        str(binary),
        *[f"--config={stages / stage}" for stage in STAGES],
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
        f"--node-lease-duration-seconds={LEASE_SECONDS}",
        "--server-address=",
        f"--cidr={POD_CIDR}",
    ]
    if node_ip is not None:
        args.append(f"--node-ip={node_ip}")
    return args


def server(binary: Path, kubeconfig: Path, work: Path, *, node_ip: str | None = None) -> Server:
    """kwok as a :class:`Server` (not started yet), logging to ``work/logs/kwok.log``, its home
    folder ``work`` (it keeps nothing there that the tests read)."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    return Server(
        "kwok",
        argv(binary, kubeconfig, node_ip=node_ip),
        work / "logs" / "kwok.log",
        env={**os.environ, "HOME": str(work)},
    )


def node_object(
    name: str,
    gpus: int,
    product: str = "H100-80GB",
    *,
    mig: dict[str, int] | None = None,
    whole: int = 0,
    shared: bool = False,
    labels: dict[str, str] | None = None,
    managed: bool = True,
) -> dict[str, Any]:
    """The Node (metadata and status) of :func:`kwok_node`."""
    node_labels = {
        "kubernetes.io/hostname": name,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(gpus),
    }
    res = {"cpu": "128", "memory": "1024Gi", "pods": "250"}
    if mig:
        node_labels["nvidia.com/mig.capable"] = "true"
        node_labels["nvidia.com/mig.strategy"] = "mixed"
        res["nvidia.com/gpu"] = str(whole)
        for profile, count in mig.items():
            res[f"nvidia.com/mig-{profile}"] = str(count)
            node_labels[f"nvidia.com/mig-{profile}.count"] = str(count)
    else:
        res["nvidia.com/gpu"] = str(gpus)
    if shared:
        node_labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
        res["nvidia.com/gpu.shared"] = str(gpus * 10)
    meta: dict[str, Any] = {"name": name, "labels": {**node_labels, **(labels or {})}}
    if managed:
        meta["annotations"] = {NODE_ANNOTATION: "fake"}
        meta["labels"].setdefault("type", "kwok")
    return {"metadata": meta, "status": {"capacity": res, "allocatable": res}}


def kwok_node(
    api: Any,
    name: str,
    gpus: int,
    product: str = "H100-80GB",
    *,
    mig: dict[str, int] | None = None,
    whole: int = 0,
    shared: bool = False,
    labels: dict[str, str] | None = None,
    managed: bool = True,
    wait: bool = True,
    kwok: Server | None = None,
) -> str:
    """Create a GPU node that kwok plays the kubelet of, advertising what NVIDIA's device plugin
    and GFD would, and return its name. ``gpus`` GPUs of ``product`` (labels
    ``nvidia.com/gpu.product``, ``nvidia.com/gpu.count``), all of them ``nvidia.com/gpu``; or, with
    ``mig`` = {profile: count}, the mixed strategy: ``nvidia.com/mig-<profile>`` instances (labels
    ``nvidia.com/mig.capable``, ``nvidia.com/mig.strategy=mixed``,
    ``nvidia.com/mig-<profile>.count``) and ``whole`` GPUs with MIG off as ``nvidia.com/gpu``; with
    ``shared``, time-sliced (``nvidia.com/gpu.shared``, 10 per GPU). ``labels`` are added last
    (e.g. GFD's ``nvidia.com/mig-<profile>.memory``). The resources are in the created object's
    status, so no moment exists where kwok sees the node without them.

    ``managed=False`` leaves the kwok annotation out: a node where no kubelet runs, whose pods
    nothing starts or finishes (left not ready and tainted, as admission made it). With ``wait``
    (managed nodes), return once kwok reports the node Ready and the not-ready taint is gone
    (:func:`wait_ready`; ``kwok``, when given, is checked alive meanwhile)."""
    from kubernetes.client import CoreV1Api

    body = node_object(
        name, gpus, product, mig=mig, whole=whole, shared=shared, labels=labels, managed=managed
    )
    CoreV1Api(api).create_node(body)
    if managed and wait:
        wait_ready(api, [name], kwok=kwok)
    return name


def wait_ready(
    api: Any, names: Iterable[str], timeout_s: float = 60.0, kwok: Server | None = None
) -> None:
    """Wait until every node of ``names`` has condition Ready True (kwok's node-initialize
    stage) and remove the not-ready taint from each, as the node lifecycle controller does.
    RuntimeError after ``timeout_s`` or when ``kwok`` (given) has exited, with its log."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api)
    waiting = set(names)
    deadline = time.monotonic() + timeout_s
    while waiting:
        if kwok is not None and not kwok.alive():
            raise RuntimeError(f"kwok exited; last log lines ({kwok.log}):\n{kwok.log_tail()}")
        if time.monotonic() > deadline:
            tail = "" if kwok is None else f"; kwok's log ({kwok.log}):\n{kwok.log_tail()}"
            raise RuntimeError(f"nodes not Ready after {timeout_s:.0f} s: {sorted(waiting)}{tail}")
        nodes = [core.read_node(n) for n in waiting] if len(waiting) < 4 else core.list_node().items
        for node in nodes:
            name = node.metadata.name
            if name not in waiting or not _ready(node):
                continue
            taints = node.spec.taints or []
            kept = [t for t in taints if t.key != NOT_READY_TAINT]
            if len(kept) != len(taints):
                body = [{"key": t.key, "value": t.value, "effect": t.effect} for t in kept]
                core.patch_node(name, {"spec": {"taints": body}})
            waiting.discard(name)
        if waiting:
            time.sleep(0.05)


def _ready(node: Any) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)
