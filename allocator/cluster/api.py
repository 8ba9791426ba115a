"""Talk to a live API server through the official client: fetch what the reader
needs, apply a plan (bindings, evictions, wallet ledger, events), and publish a node's GPU
inventory."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from allocator.cluster.config import ANNOTATION_PREFIX, ClusterConfig
from allocator.cluster.inventory import (
    INVENTORY_ANNOTATION,
    InventoryError,
    NodeInventory,
    inventory_to_dict,
)
from allocator.cluster.mig import NodePatch
from allocator.cluster.plan import WON, Binding, Charge, Eviction, Notice, Plan

__all__ = [
    "APPLY_WORKERS",
    "EVICTION_WAIT",
    "WALLET_GROUP",
    "WALLET_VERSION",
    "ApplyReport",
    "acquire_lease",
    "apply_plan",
    "connect",
    "create_wallet",
    "fetch",
    "camel_keys",
    "finish_round",
    "prune_rounds",
    "publish_inventory",
    "record_round",
    "release_lease",
    "unfinished_rounds",
]

ANNOTATION_GPUS = ANNOTATION_PREFIX + "gpus"
ANNOTATION_ROUND = ANNOTATION_PREFIX + "round"
ANNOTATION_PRICE = ANNOTATION_PREFIX + "price"

WALLET_GROUP = "gpualloc.io"
WALLET_VERSION = "v1alpha1"
# API calls an apply keeps in flight at once (also the size of the client's connection pool).
APPLY_WORKERS = 16
# Seconds an apply waits for evicted pods to be gone before binding into their room (the
# kubelet refuses a pod whose devices a terminating pod still holds); 30 s is the default
# termination grace period.
EVICTION_WAIT = 45.0


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

    def merge(self, other: ApplyReport) -> None:
        """Add ``other``'s counts and problems to this report."""
        self.bound += other.bound
        self.already_bound += other.already_bound
        self.evicted += other.evicted
        self.charged += other.charged
        self.already_charged += other.already_charged
        self.events += other.events
        self.problems += other.problems


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


def connect(kubeconfig: str | None = None, connections: int = APPLY_WORKERS) -> Any:
    """An ApiClient from a kubeconfig file, else the in-cluster service account, keeping up to
    ``connections`` connections open (as many as an apply has calls in flight)."""
    from kubernetes import config

    k8s_config: Any = config
    settings = k8s.Configuration()
    settings.connection_pool_maxsize = connections
    if kubeconfig:
        return k8s_config.new_client_from_config(
            config_file=kubeconfig, client_configuration=settings
        )
    k8s_config.load_incluster_config(client_configuration=settings)
    return k8s.ApiClient(settings)


def publish_inventory(api: Any, node: str, inventory: NodeInventory) -> None:
    """Write ``inventory`` to the Node's ``gpualloc.io/inventory`` annotation (a merge patch of
    that one annotation: the node's other metadata is left as it is); InventoryError when the
    API server refuses (404: no such Node; 403: no ``patch`` on nodes)."""
    text = json.dumps(inventory_to_dict(inventory), separators=(",", ":"))
    patch = {"metadata": {"annotations": {INVENTORY_ANNOTATION: text}}}
    try:
        k8s.CoreV1Api(api).patch_node(node, patch)
    except ApiException as e:
        raise InventoryError(f"patching Node {node}: {e.status} {e.reason}") from None


def _split(name: str) -> tuple[str, str]:
    ns, _, n = name.partition("/")
    return ns, n


def apply_plan(
    api: Any, plan: Plan, workers: int = APPLY_WORKERS, eviction_wait: float = EVICTION_WAIT
) -> ApplyReport:
    """Execute ``plan``: evict, bind, debit wallets (once per round id), emit events, with up to
    ``workers`` API calls in flight at once.

    The order that matters is kept: every eviction is requested before any binding (a binding
    may need the room an eviction frees; if an eviction fails, the bindings to its node are not
    made, or all of them when its node is not known). An evicted pod frees its room only once
    the kubelet has stopped it and it is gone (until then the kubelet would refuse a pod asking
    for its devices), so the bindings to a node with evicted pods wait for them, up to
    ``eviction_wait`` seconds, while the others are made at once; those whose victims are still
    there then stay pending for the next round (reported, not charged). Wallets are charged and
    winners told only after the bindings, for the pods actually on their planned node.
    Everything else (the pods of one phase, the events of pods that did not win) runs side by
    side.

    Each write is idempotent for the round: a pod already bound to its node, or a wallet whose
    ledger already holds the round, is left alone, so re-running after a crash repairs the round
    without charging twice. A pod that is gone, bound elsewhere or whose node is gone is
    reported, not fatal, and its wallet is not charged for it (a charge always matches a pod on
    its planned node). An error that is not an API answer (the server unreachable) cancels what
    has not started and is raised.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be an integer >= 1, got {workers!r}")
    if not isinstance(eviction_wait, int | float) or not 0 <= eviction_wait < float("inf"):
        raise ValueError(f"eviction_wait: must be seconds >= 0, got {eviction_wait!r}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")
    try:
        run = _PlanRun(api, plan, pool, eviction_wait)
        run.evict()
        binding = run.bind()
        # The losers' events queue behind the bindings (the pool takes tasks in order).
        told = run.tell_losers()
        placed = run.placed(binding)
        _collect(told + run.charge_and_tell_winners(placed), run.report)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return run.report


_T = TypeVar("_T")


class _PlanRun:
    """One apply of a plan, phase by phase (see :func:`apply_plan`): the pool runs the calls,
    this thread merges their reports and decides what the next phase may do."""

    def __init__(self, api: Any, plan: Plan, pool: ThreadPoolExecutor, wait: float) -> None:
        # Plain dicts are sent as they are (the client's typed models add nothing here).
        self.core: Any = k8s.CoreV1Api(api)
        self.custom: Any = k8s.CustomObjectsApi(api)
        self.plan = plan
        self.pool = pool
        self.eviction_wait = wait
        self.report = ApplyReport()
        self.accepted: list[Eviction] = []  # evictions the API server took
        self.not_freed: dict[str | None, list[str]] = defaultdict(list)  # node -> pods
        self.node_there: dict[str, bool] = {}
        # Events this allocator wrote before are updated, not repeated (see _event).
        self.seen: dict[tuple[str, str], int] = {}

    def evict(self) -> None:
        """Request every eviction and look at each target node, side by side."""
        evicting = [_submit(self.pool, _evict, self.core, ev) for ev in self.plan.evictions]
        nodes = sorted({b.node for b in self.plan.bindings})
        node_checks = [_submit(self.pool, _node_exists, self.core, n) for n in nodes]
        for ev, freed in zip(self.plan.evictions, _collect(evicting, self.report), strict=True):
            if freed:
                self.accepted.append(ev)
            else:
                self.not_freed[ev.node].append(ev.pod)
        self.node_there = dict(zip(nodes, _collect(node_checks, self.report), strict=True))

    def bind(self) -> list[tuple[Binding, Future[tuple[ApplyReport, bool]]]]:
        """Start the bindings: those that need no evicted room at once, the others once their
        victims are gone (or reported when they are not, after the wait)."""
        victims: dict[str | None, list[str]] = defaultdict(list)
        for ev in self.accepted:
            victims[ev.node].append(ev.pod)
        binding: list[tuple[Binding, Future[tuple[ApplyReport, bool]]]] = []
        later: list[Binding] = []
        for b in self.plan.bindings:
            if not self.node_there[b.node]:  # a node removed since the read takes no pod
                self.report.problems.append(f"{b.pod}: node {b.node} is gone")
            elif blockers := self.not_freed[b.node] + self.not_freed[None]:
                self.report.problems.append(
                    f"{b.pod}: not bound to {b.node}: evicting {', '.join(blockers)} failed"
                )
            elif victims[b.node] or victims[None]:
                later.append(b)
            else:
                binding.append((b, self._bind(b)))
        waiting = self._still_terminating({b.node for b in later})
        for b in later:
            if busy := waiting[b.node] + waiting[None]:
                self.report.problems.append(
                    f"{b.pod}: not bound to {b.node} yet: {', '.join(busy)} still terminating "
                    f"after {self.eviction_wait:g} s (the next round places it)"
                )
            else:
                binding.append((b, self._bind(b)))
        return binding

    def _bind(self, b: Binding) -> Future[tuple[ApplyReport, bool]]:
        return _submit(self.pool, _bind, self.core, b, self.plan.round_id)

    def _still_terminating(self, needed: set[str]) -> dict[str | None, list[str]]:
        """Node -> the evicted pods there still terminating after the wait (nothing to wait
        for when no binding needs evicted room)."""
        waiting: dict[str | None, list[str]] = defaultdict(list)
        if needed:
            relevant = [ev for ev in self.accepted if ev.node is None or ev.node in needed]
            for ev in _still_terminating(self.core, relevant, self.eviction_wait):
                waiting[ev.node].append(ev.pod)
        return waiting

    def tell_losers(self) -> list[Future[tuple[ApplyReport, None]]]:
        """Start the events of the pods that did not win."""
        if self.plan.notices:
            try:
                self.seen = _our_events(self.core)
            except ApiException as e:  # then every event is created (409: read and updated)
                self.report.problems.append(f"listing earlier events failed ({e.status})")
        return [self._tell(n) for n in self.plan.notices if n.reason != WON]

    def _tell(self, n: Notice) -> Future[tuple[ApplyReport, None]]:
        return _submit(self.pool, _event, self.core, n, self.seen)

    def placed(self, binding: list[tuple[Binding, Future[tuple[ApplyReport, bool]]]]) -> set[str]:
        """Wait for the bindings: the pods on their planned node, the only ones a wallet pays
        for."""
        done = _collect([f for _, f in binding], self.report)
        return {b.pod for (b, _), ok in zip(binding, done, strict=True) if ok}

    def charge_and_tell_winners(self, placed: set[str]) -> list[Future[tuple[ApplyReport, None]]]:
        """Start the wallets' charges and the winners' events, for the placed pods only."""
        after = [
            _submit(
                self.pool,
                _charge,
                self.custom,
                Charge(c.wallet, sum(a for _, a in paid), paid),
                self.plan.round_id,
            )
            for c in self.plan.charges
            if (paid := tuple((pod, amount) for pod, amount in c.pods if pod in placed))
        ]
        return after + [
            self._tell(n) for n in self.plan.notices if n.reason == WON and n.name in placed
        ]


def _submit(
    pool: ThreadPoolExecutor, call: Callable[..., _T], *args: Any
) -> Future[tuple[ApplyReport, _T]]:
    """Run ``call(*args, report)`` in the pool with a report of its own (merged by the caller's
    thread, so no counter is shared between threads)."""

    def task() -> tuple[ApplyReport, _T]:
        own = ApplyReport()
        return own, call(*args, own)

    return pool.submit(task)


def _collect(futures: list[Future[tuple[ApplyReport, _T]]], report: ApplyReport) -> list[_T]:
    """Wait for ``futures`` in order, merge their reports into ``report``, return their values;
    the first error that is not an API answer is raised."""
    values = []
    for f in futures:
        part, value = f.result()
        report.merge(part)
        values.append(value)
    return values


def _raw(call: Callable[..., Any], *args: Any) -> bytes:
    """``call(*args)`` without the client's typed model of the answer (building it costs more
    than the call); the body read to the end, which gives the connection back to the pool."""
    data: bytes = call(*args, _preload_content=False).data
    return data


def _still_terminating(core: Any, evicted: list[Eviction], wait: float) -> list[Eviction]:
    """The pods of ``evicted`` still there after up to ``wait`` seconds (polled twice a second).
    A pod is gone when it is not found, or when the name now belongs to a pod not being deleted
    (a controller's replacement)."""
    left = list(evicted)
    deadline = time.monotonic() + wait
    while left:
        still = []
        for ev in left:
            ns, name = _split(ev.pod)
            try:
                meta = json.loads(_raw(core.read_namespaced_pod, name, ns)).get("metadata", {})
            except ApiException as e:
                if e.status != 404:  # not known to be gone: its room stays taken
                    still.append(ev)
                continue
            if meta.get("deletionTimestamp"):
                still.append(ev)
        left = still
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return left


def _evict(core: Any, ev: Eviction, report: ApplyReport) -> bool:
    """Evict ``ev.pod`` through the Eviction API; False if its room is not being freed."""
    ns, name = _split(ev.pod)
    try:
        _raw(
            core.create_namespaced_pod_eviction,
            name,
            ns,
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}},
        )
        report.evicted += 1
        return True
    except ApiException as e:
        if e.status == 404:  # gone already (an earlier apply, or its owner): the room is free
            report.problems.append(f"{ev.pod}: not evicted: already gone")
            return True
        report.problems.append(f"{ev.pod}: eviction failed ({e.status} {e.reason})")
        return False


def _node_exists(core: Any, node: str, report: ApplyReport) -> bool:
    del report
    try:
        _raw(core.read_node, node)
        return True
    except ApiException as e:
        if e.status != 404:
            raise
        return False


def _bind(core: Any, b: Binding, round_id: str, report: ApplyReport) -> bool:
    """Annotate the pod with its GPUs and the round, then bind it (Binding subresource); True
    if it is on its planned node afterwards (bound now or by an earlier apply)."""
    ns, name = _split(b.pod)
    try:
        raw = _raw(core.read_namespaced_pod, name, ns)
    except ApiException as e:
        report.problems.append(f"{b.pod}: cannot read ({e.status})")
        return False
    on = (json.loads(raw).get("spec") or {}).get("nodeName")
    if on:
        if on == b.node:
            report.already_bound += 1
            return True
        report.problems.append(f"{b.pod}: already on {on}")
        return False
    annotations = {
        ANNOTATION_GPUS: ",".join(str(g) for g in b.gpus),
        ANNOTATION_ROUND: round_id,
        ANNOTATION_PRICE: f"{b.price:g}",
    }
    try:
        _raw(core.patch_namespaced_pod, name, ns, {"metadata": {"annotations": annotations}})
        _raw(
            core.create_namespaced_pod_binding,
            name,
            ns,
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": b.node},
            },
        )
    except ApiException as e:
        report.problems.append(f"{b.pod}: bind failed ({e.status} {e.reason})")
        return False
    report.bound += 1
    return True


_API_VERSION = {"Pod": "v1", "Node": "v1", "Wallet": f"{WALLET_GROUP}/{WALLET_VERSION}"}


EVENT_SOURCE = "gpu-allocator"


def _event_key(n: Notice) -> tuple[str, str]:
    """(namespace, name) of the one Event about ``n``'s object and reason: a node's in
    ``default``, where Kubernetes puts node events; the name is the object's (cut to fit) and a
    digest of kind, object, uid and reason, so that every round finds it again."""
    ns, name = _split(n.name) if "/" in n.name else ("", n.name)
    digest = hashlib.sha1(f"{n.kind}/{ns}/{name}/{n.uid or ''}/{n.reason}".encode()).hexdigest()
    return ns or "default", f"{name[:200]}.{digest[:12]}"


def our_events(core: Any, selector: str = "") -> Iterator[dict[str, Any]]:
    """Every Event this allocator wrote that still exists (the API server drops events after
    its --event-ttl, one hour by default), as JSON, listed in pages; ``selector`` adds field
    selectors (``involvedObject.kind=Pod``)."""
    fields = f"source={EVENT_SOURCE}" + (f",{selector}" if selector else "")
    token: str | None = None
    while True:
        page = json.loads(
            core.list_event_for_all_namespaces(
                field_selector=fields, limit=2000, _continue=token, _preload_content=False
            ).data
        )
        yield from page.get("items", [])
        token = page.get("metadata", {}).get("continue") or None
        if token is None:
            return


def _our_events(core: Any) -> dict[tuple[str, str], int]:
    """(namespace, name) -> count of every Event this allocator wrote that still exists."""
    return {
        (item["metadata"]["namespace"], item["metadata"]["name"]): int(item.get("count") or 1)
        for item in our_events(core)
    }


def _event(core: Any, n: Notice, seen: Mapping[tuple[str, str], int], report: ApplyReport) -> None:
    """Report ``n`` as an Event on its object. One Event per object and reason, as kubectl's
    aggregation of repeats: a round that says it again updates that Event (count + 1, the new
    message, lastTimestamp) instead of adding one, so a pod that keeps losing under --interval
    holds one Outbid event, not one per round."""
    ns, name = _split(n.name) if "/" in n.name else ("", n.name)
    where, event_name = _event_key(n)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kind = "Warning" if n.warning else "Normal"
    update = {"count": 0, "message": n.message, "type": kind, "lastTimestamp": now}
    try:
        if (where, event_name) in seen:
            update["count"] = seen[(where, event_name)] + 1
            _raw(core.patch_namespaced_event, event_name, where, update)
        else:
            involved = {"apiVersion": _API_VERSION[n.kind], "kind": n.kind, "name": name}
            if ns:
                involved["namespace"] = ns
            if n.uid:
                involved["uid"] = n.uid  # kubectl describe finds an object's events by uid
            body = {
                "metadata": {"name": event_name, "namespace": where},
                "involvedObject": involved,
                "reason": n.reason,
                "message": n.message,
                "type": kind,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": EVENT_SOURCE},
            }
            try:
                _raw(core.create_namespaced_event, where, body)
            except ApiException as e:
                if e.status != 409:  # 409: written since the list (a repair run, say)
                    raise
                old = json.loads(_raw(core.read_namespaced_event, event_name, where))
                update["count"] = int(old.get("count") or 1) + 1
                _raw(core.patch_namespaced_event, event_name, where, update)
        report.events += 1
    except ApiException as e:
        report.problems.append(f"{n.kind} {n.name}: event failed ({e.status})")


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
    figures: Mapping[str, Any] | None = None,
) -> None:
    """Write the AllocationRound ``plan.round_id`` in phase Applying, with the plan, before any
    other write of the round (an existing record is left as it is). ``payments`` is the rule
    that priced the round; ``figures`` more status fields as the CRD spells them (the loop's
    ``round_figures``: solver used, prices, utilisation, timings, the payment audit)."""
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
            {
                "pod": b.pod,
                "node": b.node,
                "gpus": list(b.gpus),
                "milli": b.milli,
                "price": b.price,
                **({"origin": b.origin} if b.origin else {}),
            }
            for b in plan.bindings
        ],
        **(figures or {}),
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


def camel_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """Keys as Kubernetes objects spell them (``mean_err`` -> ``meanErr``)."""
    out = {}
    for k, v in d.items():
        head, *rest = k.split("_")
        out[head + "".join(w.capitalize() for w in rest)] = v
    return out


def finish_round(
    api: Any, namespace: str, round_id: str, report: ApplyReport, apply_ms: float | None = None
) -> None:
    """Mark the round Applied, with what could not be done as its message (and, given, the
    milliseconds its apply took)."""
    custom: Any = k8s.CustomObjectsApi(api)
    message = "; ".join(report.problems)[:4000]
    status: dict[str, Any] = {"phase": "Applied", "message": message}
    if apply_ms is not None:
        status["timing"] = {"applyMs": round(apply_ms, 3)}
    custom.patch_namespaced_custom_object_status(
        WALLET_GROUP,
        WALLET_VERSION,
        namespace,
        ROUND_PLURAL,
        round_id,
        {"status": status},
    )


def prune_rounds(api: Any, namespace: str, keep: int) -> list[str]:
    """Delete the Applied AllocationRounds of ``namespace`` beyond the newest ``keep`` (by
    creation time, then name); rounds in any other phase are never deleted. Returns the names
    deleted (one already gone is skipped)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep: must be an integer >= 1, got {keep!r}")
    custom: Any = k8s.CustomObjectsApi(api)
    listed = custom.list_namespaced_custom_object(
        WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL
    )
    applied = sorted(
        (
            (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"])
            for o in listed["items"]
            if (o.get("status") or {}).get("phase") == "Applied"
        ),
        reverse=True,
    )
    deleted = []
    for _, name in applied[keep:]:
        try:
            custom.delete_namespaced_custom_object(
                WALLET_GROUP, WALLET_VERSION, namespace, ROUND_PLURAL, name
            )
            deleted.append(name)
        except ApiException as e:
            if e.status != 404:
                raise
    return deleted


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
                    Binding(
                        b["pod"],
                        b["node"],
                        tuple(b["gpus"]),
                        b.get("milli", 0),
                        b.get("price", 0.0),
                        b.get("origin", ""),
                    )
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


def patch_node_metadata(api: Any, patch: NodePatch) -> None:
    """Set (a None value: remove) ``patch``'s labels and annotations on its node (a JSON merge
    patch: other keys stay)."""
    meta: dict[str, Any] = {}
    if patch.labels:
        meta["labels"] = dict(patch.labels)
    if patch.annotations:
        meta["annotations"] = dict(patch.annotations)
    if meta:
        k8s.CoreV1Api(api).patch_node(patch.node, {"metadata": meta})


def add_mig_configs(
    api: Any, namespace: str, name: str, configs: Mapping[str, Sequence[Mapping[str, Any]]]
) -> None:
    """Add ``configs`` (name -> mig-parted entries) to the MIG manager's ConfigMap (key
    ``config.yaml``, ``version: v1``), creating it if missing; configurations already there
    stay (a name is content-addressed, so an existing one is the same). Retries on a conflict."""
    import yaml

    core = k8s.CoreV1Api(api)
    for _ in range(5):
        try:
            cm: dict[str, Any] | None = json.loads(
                _raw(core.read_namespaced_config_map, name, namespace)
            )
        except ApiException as e:
            if e.status != 404:
                raise
            cm = None
        text = ((cm or {}).get("data") or {}).get("config.yaml") or ""
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"ConfigMap {namespace}/{name}: config.yaml is not a mapping")
        doc.setdefault("version", "v1")
        known = doc.setdefault("mig-configs", {})
        if all(k in known for k in configs):
            return
        known.update({k: [dict(e) for e in v] for k, v in configs.items()})
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        body = {"metadata": meta, "data": {"config.yaml": yaml.safe_dump(doc, sort_keys=True)}}
        try:
            if cm is None:
                _raw(core.create_namespaced_config_map, namespace, body)
            else:
                meta["resourceVersion"] = cm["metadata"]["resourceVersion"]
                _raw(core.replace_namespaced_config_map, name, namespace, body)
            return
        except ApiException as e:
            if e.status not in (404, 409):
                raise
    raise RuntimeError(f"ConfigMap {namespace}/{name}: kept conflicting, not written")
