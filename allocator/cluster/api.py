"""Talk to a live API server (the only module importing kubernetes): fetch what the reader
needs, and apply a plan (bindings, evictions, wallet ledger, events)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from allocator.cluster.config import ANNOTATION_PREFIX, ClusterConfig
from allocator.cluster.plan import Binding, Charge, Eviction, Plan

__all__ = [
    "WALLET_GROUP",
    "WALLET_VERSION",
    "ApplyReport",
    "acquire_lease",
    "apply_plan",
    "connect",
    "create_wallet",
    "fetch",
    "finish_round",
    "record_round",
    "release_lease",
    "unfinished_rounds",
]

ANNOTATION_GPUS = ANNOTATION_PREFIX + "gpus"
ANNOTATION_ROUND = ANNOTATION_PREFIX + "round"

WALLET_GROUP = "gpualloc.io"
WALLET_VERSION = "v1alpha1"


def fetch(
    api: Any, config: ClusterConfig | None = None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes, pods (all namespaces) and Wallets as the API's JSON, for
    :func:`allocator.cluster.read.snapshot`. ``api`` is a ``kubernetes.client.ApiClient``."""
    del config  # every pod is read: others' running pods hold GPUs and CPU too
    core = k8s.CoreV1Api(api)
    custom = k8s.CustomObjectsApi(api)
    nodes = api.sanitize_for_serialization(core.list_node().items)
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces().items)
    listed: Any = custom.list_cluster_custom_object(WALLET_GROUP, WALLET_VERSION, "wallets")
    return list(nodes), list(pods), list(listed["items"])


@dataclass
class ApplyReport:
    """What applying a plan did: counts, and the pods or wallets it could not touch and why."""

    bound: int = 0
    already_bound: int = 0
    evicted: int = 0
    charged: int = 0
    already_charged: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)


def create_wallet(api: Any, namespace: str, name: str, balance: float, **spec: Any) -> Any:
    """Create a Wallet custom resource (``spec`` adds incomePerPeriod, period, priority)."""
    custom: Any = k8s.CustomObjectsApi(api)
    return custom.create_namespaced_custom_object(
        WALLET_GROUP,
        WALLET_VERSION,
        namespace,
        "wallets",
        {
            "apiVersion": f"{WALLET_GROUP}/{WALLET_VERSION}",
            "kind": "Wallet",
            "metadata": {"name": name},
            "spec": {"balance": balance, **spec},
        },
    )


def connect(kubeconfig: str | None = None) -> Any:
    """An ApiClient from a kubeconfig file, else the in-cluster service account."""
    from kubernetes import config

    k8s_config: Any = config
    if kubeconfig:
        return k8s_config.new_client_from_config(config_file=kubeconfig)
    k8s_config.load_incluster_config()
    return k8s.ApiClient()


def _split(name: str) -> tuple[str, str]:
    ns, _, n = name.partition("/")
    return ns, n


def apply_plan(api: Any, plan: Plan) -> ApplyReport:
    """Execute ``plan``: bind, evict, debit wallets (once per round id), emit events.

    Each write is idempotent for the round: a pod already bound to its node, or a wallet whose
    ledger already holds the round, is left alone, so re-running after a crash repairs the round
    without charging twice. A pod that is gone, bound elsewhere or whose node is gone is
    reported, not fatal, and its wallet is not charged for it (a charge always matches a pod on
    its planned node).
    """
    # Plain dicts are sent as they are (the client's typed models add nothing here).
    core: Any = k8s.CoreV1Api(api)
    custom: Any = k8s.CustomObjectsApi(api)
    report = ApplyReport()
    node_there: dict[str, bool] = {}
    placed: set[str] = set()  # pods on their planned node: the only ones a wallet pays for
    for b in plan.bindings:
        ns, name = _split(b.pod)
        if b.node not in node_there:  # a node removed since the read takes no pod
            try:
                core.read_node(b.node)
                node_there[b.node] = True
            except ApiException as e:
                if e.status != 404:
                    raise
                node_there[b.node] = False
        if not node_there[b.node]:
            report.problems.append(f"{b.pod}: node {b.node} is gone")
            continue
        try:
            pod = core.read_namespaced_pod(name, ns)
        except ApiException as e:
            report.problems.append(f"{b.pod}: cannot read ({e.status})")
            continue
        if pod.spec.node_name:
            if pod.spec.node_name == b.node:
                report.already_bound += 1
                placed.add(b.pod)
            else:
                report.problems.append(f"{b.pod}: already on {pod.spec.node_name}")
            continue
        annotations = {
            ANNOTATION_GPUS: ",".join(str(g) for g in b.gpus),
            ANNOTATION_ROUND: plan.round_id,
        }
        try:
            core.patch_namespaced_pod(name, ns, {"metadata": {"annotations": annotations}})
            core.create_namespaced_pod_binding(
                name,
                ns,
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": b.node},
                },
                _preload_content=False,
            )
            report.bound += 1
            placed.add(b.pod)
        except ApiException as e:
            report.problems.append(f"{b.pod}: bind failed ({e.status} {e.reason})")
    for ev in plan.evictions:
        ns, name = _split(ev.pod)
        try:
            core.create_namespaced_pod_eviction(
                name,
                ns,
                {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}},
                _preload_content=False,
            )
            report.evicted += 1
        except ApiException as e:
            report.problems.append(f"{ev.pod}: eviction failed ({e.status} {e.reason})")
    for c in plan.charges:
        paid = tuple((pod, amount) for pod, amount in c.pods if pod in placed)
        if paid:
            _charge(custom, Charge(c.wallet, sum(a for _, a in paid), paid), plan.round_id, report)
    for n in plan.notices:
        ns, name = _split(n.pod)
        try:
            core.create_namespaced_event(
                ns,
                {
                    "metadata": {"generateName": f"{name}."},
                    "involvedObject": {"kind": "Pod", "namespace": ns, "name": name},
                    "reason": n.reason,
                    "message": n.message,
                    "type": "Warning" if n.warning else "Normal",
                    "source": {"component": "gpu-allocator"},
                },
                _preload_content=False,
            )
            report.events += 1
        except ApiException as e:
            report.problems.append(f"{n.pod}: event failed ({e.status})")
    return report


def _charge(custom: Any, c: Charge, round_id: str, report: ApplyReport, attempts: int = 5) -> None:
    """Append the round to the wallet's ledger and add to ``spent``, guarded by the object's
    resourceVersion: a concurrent update (409) is re-read and retried."""
    ns, name = _split(c.wallet)
    for _ in range(attempts):
        try:
            w = custom.get_namespaced_custom_object(
                WALLET_GROUP, WALLET_VERSION, ns, "wallets", name
            )
        except ApiException as e:
            report.problems.append(f"{c.wallet}: cannot read ({e.status})")
            return
        status = w.get("status") or {}
        ledger = list(status.get("ledger") or [])
        if any(entry.get("round") == round_id for entry in ledger):
            report.already_charged += 1
            return
        ledger.append(
            {
                "round": round_id,
                "amount": c.amount,
                "charges": [{"pod": p, "amount": a} for p, a in c.pods],
            }
        )
        body = {
            "metadata": {"resourceVersion": w["metadata"]["resourceVersion"]},
            "status": {
                "spent": float(status.get("spent", 0) or 0) + c.amount,
                "lastRound": round_id,
                "ledger": ledger,
            },
        }
        try:
            custom.replace_namespaced_custom_object_status(
                WALLET_GROUP,
                WALLET_VERSION,
                ns,
                "wallets",
                name,
                {**w, **body, "metadata": {**w["metadata"], **body["metadata"]}},
            )
            report.charged += 1
            return
        except ApiException as e:
            if e.status != 409:
                report.problems.append(f"{c.wallet}: charge failed ({e.status} {e.reason})")
                return
    report.problems.append(f"{c.wallet}: charge gave up after {attempts} conflicts")


def acquire_lease(
    api: Any, namespace: str, name: str, holder: str, duration_s: int = 60, now: Any = None
) -> bool:
    """Take (or renew) the coordination.k8s.io Lease ``namespace/name`` for ``holder``.

    True if ``holder`` holds it afterwards: it was free, expired (renewTime + duration passed) or
    already ours. Creation and takeover are guarded by the API server (409 on a race), so of two
    runs at once only one gets it.
    """
    import datetime as _dt

    coord: Any = k8s.CoordinationV1Api(api)
    t = now or _dt.datetime.now(_dt.UTC)
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_s,
        "acquireTime": stamp,
        "renewTime": stamp,
    }
    try:
        lease = coord.read_namespaced_lease(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
        try:
            coord.create_namespaced_lease(
                namespace, {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
            )
            return True
        except ApiException as e2:
            if e2.status == 409:
                return False
            raise
    current = lease.spec.holder_identity
    renewed = lease.spec.renew_time
    duration = lease.spec.lease_duration_seconds or duration_s
    held_by_other = current and current != holder and renewed is not None
    if held_by_other and renewed + _dt.timedelta(seconds=duration) > t:
        return False
    if current == holder and lease.spec.acquire_time is not None:
        spec["acquireTime"] = lease.spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _replace_lease(coord, lease, spec)


ROUND_PLURAL = "allocationrounds"


def record_round(
    api: Any,
    namespace: str,
    plan: Plan,
    *,
    solver: str,
    payments: str,
    time_limit: float,
    welfare: float,
    revenue: float,
) -> None:
    """Write the AllocationRound ``plan.round_id`` in phase Applying, with the plan, before any
    other write of the round (an existing record is left as it is)."""
    custom: Any = k8s.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{WALLET_GROUP}/{WALLET_VERSION}",
        "kind": "AllocationRound",
        "metadata": {"name": plan.round_id, "namespace": namespace},
        "spec": {"solver": solver, "paymentRule": payments, "timeLimitSeconds": time_limit},
    }
    try:
        custom.create_namespaced_custom_object(
            WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL, body
        )
    except ApiException as e:
        if e.status == 409:
            return
        raise
    status = {
        "phase": "Applying",
        "winners": len(plan.bindings),
        "evictions": len(plan.evictions),
        "welfare": welfare,
        "revenue": revenue,
        "bindings": [
            {"pod": b.pod, "node": b.node, "gpus": list(b.gpus), "milli": b.milli}
            for b in plan.bindings
        ],
        "evicted": [e.pod for e in plan.evictions],
        "charges": [
            {
                "wallet": c.wallet,
                "amount": c.amount,
                "pods": [{"pod": p, "amount": a} for p, a in c.pods],
            }
            for c in plan.charges
        ],
    }
    custom.patch_namespaced_custom_object_status(
        WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL, plan.round_id, {"status": status}
    )


def finish_round(api: Any, namespace: str, round_id: str, report: ApplyReport) -> None:
    """Mark the round Applied, with what could not be done as its message."""
    custom: Any = k8s.CustomObjectsApi(api)
    message = "; ".join(report.problems)[:4000]
    custom.patch_namespaced_custom_object_status(
        WALLET_GROUP,
        WALLET_VERSION,
        namespace,
        ROUND_PLURAL,
        round_id,
        {"status": {"phase": "Applied", "message": message}},
    )


def unfinished_rounds(api: Any, namespace: str) -> list[Plan]:
    """Plans of the rounds a run left in phase Applying (oldest first), to complete them."""
    custom: Any = k8s.CustomObjectsApi(api)
    listed = custom.list_namespaced_custom_object(
        WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL
    )
    plans = []
    for item in sorted(listed["items"], key=lambda o: o["metadata"]["name"]):
        status = item.get("status") or {}
        if status.get("phase") != "Applying":
            continue
        plans.append(
            Plan(
                item["metadata"]["name"],
                tuple(
                    Binding(b["pod"], b["node"], tuple(b["gpus"]), b.get("milli", 0))
                    for b in status.get("bindings") or []
                ),
                tuple(Eviction(p) for p in status.get("evicted") or []),
                tuple(
                    Charge(
                        c["wallet"],
                        c["amount"],
                        tuple((p["pod"], p["amount"]) for p in c.get("pods") or []),
                    )
                    for c in status.get("charges") or []
                ),
            )
        )
    return plans


def release_lease(api: Any, namespace: str, name: str, holder: str) -> bool:
    """Give the Lease up if ``holder`` holds it (the next run may take it at once); True if it
    was released. A Lease held by someone else is left alone."""
    coord: Any = k8s.CoordinationV1Api(api)
    try:
        lease = coord.read_namespaced_lease(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    if lease.spec.holder_identity != holder:
        return False
    spec = {"holderIdentity": None, "leaseDurationSeconds": lease.spec.lease_duration_seconds}
    return _replace_lease(coord, lease, spec)


def _replace_lease(coord: Any, lease: Any, spec: dict[str, Any]) -> bool:
    """Write ``spec`` over the Lease read as ``lease``, guarded by its resourceVersion; False if
    someone else wrote it in between (409)."""
    meta = lease.metadata
    body = {
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "resourceVersion": meta.resource_version,
        },
        "spec": spec,
    }
    try:
        coord.replace_namespaced_lease(meta.name, meta.namespace, body)
        return True
    except ApiException as e:
        if e.status == 409:
            return False
        raise
