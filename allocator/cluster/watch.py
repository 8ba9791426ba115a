"""What starts a round in watch mode (``gpu-allocator run --watch``): watch streams, the filter
that decides which of their events change the bids, and the debounce that coalesces them.

Three threads follow the API server's watch streams (``kubernetes.watch.Watch``): pods in all
namespaces, Wallets cluster-wide, nodes. Each keeps, per object, only the *state* a round reads
from it (:func:`pod_state`, :func:`wallet_state`, :func:`node_state`: a role and a fingerprint)
and reports a :class:`Change` when that state moves in a way that can change a round's answer
(:func:`what_changed`): a pending pod of ours added, changed or gone; a running GPU pod gone or
finished (its room is free); a Wallet's spec, a node's GPUs, allocatable or topology labels
changed, or either added or gone. Everything else is ignored, and in particular what a round
itself writes: the annotations it puts on a pod before binding it, the binding (a bid becoming a
running pod takes room and frees none), the ``deletionTimestamp`` of a pod it evicts (the pod
holds its room until it is gone; its deletion is then one change, so an eviction causes at most
one follow-up round), Wallet status (the ledger and ``status.spent``), Events and
AllocationRounds (not watched). Status heartbeats of pods and nodes change no state.

:class:`Debouncer` turns changes into round starts: a round starts once no change has come for
``debounce`` seconds, but at most ``max_delay`` seconds after the first change it answers, and
at least every ``interval`` seconds (start to start) even with no change; :func:`next_round_at`
is that rule as a pure function. :class:`ClusterWatch` runs the threads: a watch that expires
(410 Gone) is replaced by a fresh list, diffed against the states kept (so changes missed while
disconnected are still reported) and a watch from the list's resourceVersion; a failing
connection (the API server restarting) is retried with backoff; each watch request lasts
``watch_seconds`` (server side), so a stop is seen within about that long.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from allocator.cluster.config import ANNOTATION_PREFIX, ClusterConfig

__all__ = [
    "DELETED",
    "NODE",
    "POD",
    "WALLET",
    "Change",
    "ClusterWatch",
    "Debouncer",
    "RoundTrigger",
    "WatchStats",
    "classify",
    "next_round_at",
    "node_state",
    "pod_state",
    "state_of",
    "wallet_state",
    "what_changed",
]

log = logging.getLogger(__name__)

POD, WALLET, NODE = "Pod", "Wallet", "Node"
ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

#: Pod annotations the allocator writes itself when it binds a pod (allocator.cluster.api's
#: _bind; tests/test_cluster_watch.py holds the two together): no change of the bid.
OWN_ANNOTATIONS = frozenset(ANNOTATION_PREFIX + k for k in ("gpus", "round", "price"))
#: Node labels that move with no change of what the node offers (GPU feature discovery stamps
#: its last run).
NOISY_LABELS = frozenset({"nvidia.com/gfd.timestamp"})
_GPU_RESOURCE = "nvidia.com/gpu"
_MIG_PREFIX = "nvidia.com/mig-"
_NVIDIA = "nvidia.com/"

#: What a round reads from one object: (role, fingerprint). Roles: ``bid`` (a pending pod of
#: ours), ``holds`` (a pod holding GPUs on a node), ``wallet``, ``node``.
State = tuple[str, str]


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _annotations(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The pod's annotations starting with ``prefix``, less the ones the allocator writes."""
    return {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(prefix) and k not in OWN_ANNOTATIONS
    }


def _gpu_requests(pod: Mapping[str, Any], config: ClusterConfig) -> dict[str, list[str]]:
    """GPU resources (whole GPUs, MIG instances, shares) the pod's containers ask for, as
    written (requests, else limits), leaving out zero amounts."""
    asked: dict[str, list[str]] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for key, value in merged.items():
            gpu = key == _GPU_RESOURCE or key.startswith(_MIG_PREFIX)
            if (gpu or key == config.share_resource) and str(value).strip() not in ("0", ""):
                asked.setdefault(key, []).append(str(value))
    return asked


def pod_state(pod: Mapping[str, Any], config: ClusterConfig) -> State | None:
    """What a round reads from ``pod``: a bid (``spec.schedulerName`` is ours, no node yet,
    phase Pending) with its uid, requests, annotations (all: bid, wallet, locality, the names
    vcluster gives an agent's pod, ...) and gang label; a pod holding GPUs (on a node, not
    Succeeded or Failed, asking for GPUs) with its uid, node, GPU requests and ``gpualloc.io/``
    annotations (value, preemptibility); or None (nothing a round depends on: others' pending
    pods, pods without GPUs, finished pods). Status, conditions, ``deletionTimestamp`` (a pod
    being deleted holds its room until it is gone) and the annotations the allocator writes
    when it binds a pod are not part of it."""
    meta = _meta(pod)
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    node = spec.get("nodeName")
    if not node:
        if spec.get("schedulerName") != config.scheduler_name or phase != "Pending":
            return None
        gang = (meta.get("labels") or {}).get(ANNOTATION_PREFIX + "gang")
        resources = [c.get("resources") or {} for c in spec.get("containers") or []]
        bid = [meta.get("uid"), _annotations(meta), gang, resources]
        return ("bid", _fingerprint(bid))
    if phase in ("Succeeded", "Failed"):
        return None
    gpus = _gpu_requests(pod, config)
    if not gpus:
        return None
    annotations = _annotations(meta, ANNOTATION_PREFIX)
    return ("holds", _fingerprint([meta.get("uid"), node, gpus, annotations]))


def wallet_state(wallet: Mapping[str, Any]) -> State:
    """What a round reads from a Wallet: its spec (balance, income, period, priority), labels
    (an agent's Wallet is labelled) and identity (uid, creation time: the start of its funding
    periods). Not its status: only the allocator writes it (its charges), and a charge only
    lowers what a wallet can pay."""
    meta = _meta(wallet)
    identity = [meta.get("uid"), meta.get("creationTimestamp"), meta.get("labels") or {}]
    return ("wallet", _fingerprint([identity, wallet.get("spec")]))


def node_state(node: Mapping[str, Any], config: ClusterConfig) -> State:
    """What a round reads from a node: its allocatable resources, its ``nvidia.com/`` labels
    (product, memory, sharing, MIG; not GFD's timestamp) and its rack and zone labels. Not its
    status conditions or heartbeats."""
    labels = _meta(node).get("labels") or {}
    kept = {
        k: v
        for k, v in labels.items()
        if (k.startswith(_NVIDIA) and k not in NOISY_LABELS)
        or k in (config.rack_label, config.zone_label)
    }
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return ("node", _fingerprint([kept, allocatable]))


def state_of(kind: str, obj: Mapping[str, Any], config: ClusterConfig) -> State | None:
    """The state of an object of ``kind`` (:data:`POD`, :data:`WALLET` or :data:`NODE`)."""
    if kind == POD:
        return pod_state(obj, config)
    if kind == WALLET:
        return wallet_state(obj)
    if kind == NODE:
        return node_state(obj, config)
    raise ValueError(f"kind: not one of {POD}, {WALLET}, {NODE}: {kind!r}")


def what_changed(kind: str, old: State | None, new: State | None) -> str | None:
    """Whether an object going from state ``old`` to ``new`` (None: absent or irrelevant) can
    change a round's answer: a short description if so, else None.

    A pod: a bid added, changed or gone matters; a bid becoming a running pod does not (a
    binding takes room and frees none: the allocator's own bindings must not start rounds); a
    running GPU pod gone (deleted, finished) or changed matters; a GPU pod appearing on a node
    does not. A Wallet or a node: added, changed or gone matters."""
    if old == new:
        return None
    if kind == POD:
        was = old[0] if old else None
        now = new[0] if new else None
        if now == "bid":
            return "pending pod changed" if was == "bid" else "pending pod added"
        if was == "bid":
            return None if now == "holds" else "pending pod gone"
        if was == "holds":
            return "running GPU pod ended" if new is None else "running GPU pod changed"
        return None
    noun = kind.lower()
    if old is None:
        return f"{noun} added"
    if new is None:
        return f"{noun} gone"
    return f"{noun} changed"


def classify(
    kind: str,
    event: str,
    obj: Mapping[str, Any],
    old: State | None,
    config: ClusterConfig,
) -> tuple[State | None, str | None]:
    """Does a watch event matter? ``event`` is ADDED, MODIFIED or DELETED, ``obj`` the object
    as the event carries it, ``old`` the state kept from before (None: none). Returns the state
    to keep (None: forget the object) and what changed (None: nothing that starts a round)."""
    new = None if event == DELETED else state_of(kind, obj, config)
    return new, what_changed(kind, old, new)


@dataclass(frozen=True)
class Change:
    """One change that calls for a round: the object's kind, namespace (empty for a node),
    name, and what changed."""

    kind: str
    namespace: str
    name: str
    what: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}: {self.what}"


@dataclass(frozen=True)
class RoundTrigger:
    """Why a round started: ``reason`` is ``start`` (the first round, which answers everything
    there is and counts no change), ``change`` (changes, debounced) or ``interval`` (the ceiling
    between rounds came first); ``changes`` counts the changes coalesced into it, ``first`` is
    the first of them and ``waited`` the seconds from it to the round's start."""

    reason: str
    changes: int = 0
    first: Change | None = None
    waited: float = 0.0

    def __str__(self) -> str:
        if self.first is None:
            return self.reason
        more = f" (+{self.changes - 1} more)" if self.changes > 1 else ""
        return f"{self.reason}: {self.first}{more}, {self.waited:.2f} s after it"


def next_round_at(
    *,
    last_round: float | None,
    first_change: float | None,
    last_change: float | None,
    debounce: float,
    max_delay: float,
    interval: float,
) -> tuple[float, str]:
    """When the next round is due, and why (``start``, ``change`` or ``interval``).

    The first round is due at once. After that: ``interval`` seconds after the last round
    started (the ceiling), or, with changes not yet answered, ``debounce`` seconds after the
    latest of them but no later than ``max_delay`` seconds after the first, whichever is
    earlier."""
    if last_round is None:
        return -math.inf, "start"
    ceiling = last_round + interval
    if first_change is not None and last_change is not None:
        at = min(last_change + debounce, first_change + max_delay)
        if at <= ceiling:
            return at, "change"
    return ceiling, "interval"


class Debouncer:
    """Collects changes (:meth:`notify`, from any thread) and says when to start a round
    (:meth:`wait`), following :func:`next_round_at`. ``clock`` gives the time in seconds (a
    test passes its own and wakes a waiter with :meth:`poke` after moving it)."""

    def __init__(
        self,
        *,
        debounce: float,
        max_delay: float,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.debounce = debounce
        self.max_delay = max_delay
        self.interval = interval
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._last_round: float | None = None
        self._first: Change | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._count = 0

    def notify(self, change: Change) -> None:
        """Record a change (its time is the clock's now) and wake the waiter."""
        with self._cond:
            now = self._clock()
            if self._first is None:
                self._first, self._first_at = change, now
            self._last_at = now
            self._count += 1
            self._cond.notify_all()

    def poke(self) -> None:
        """Wake the waiter to look at the clock again."""
        with self._cond:
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Changes recorded and not yet taken by a round."""
        with self._cond:
            return self._count

    def due(self) -> tuple[float, str]:
        """When the next round is due by the clock, and why."""
        with self._cond:
            return self._due()

    def _due(self) -> tuple[float, str]:
        return next_round_at(
            last_round=self._last_round,
            first_change=self._first_at,
            last_change=self._last_at,
            debounce=self.debounce,
            max_delay=self.max_delay,
            interval=self.interval,
        )

    def take(self, reason: str | None = None) -> RoundTrigger:
        """Start a round now: the changes so far are its trigger, later ones wait for the
        next; the ceiling counts from now."""
        with self._cond:
            return self._take(reason or self._due()[1])

    def _take(self, reason: str) -> RoundTrigger:
        now = self._clock()
        waited = 0.0 if self._first_at is None else max(0.0, now - self._first_at)
        trigger = RoundTrigger(reason, self._count, self._first, waited)
        if reason == "start":  # it answers all there is (the first lists report every object)
            trigger = RoundTrigger(reason)
        self._first = self._first_at = self._last_at = None
        self._count = 0
        self._last_round = now
        return trigger

    def wait(self, stop: threading.Event, poll: float = 0.2) -> RoundTrigger | None:
        """Block until the next round is due, then :meth:`take` it; None as soon as ``stop`` is
        set (seen within ``poll`` seconds; a signal handler may set it: nothing here holds a
        lock the handler needs)."""
        with self._cond:
            while True:
                if stop.is_set():
                    return None
                at, reason = self._due()
                left = at - self._clock()
                if left <= 0:
                    return self._take(reason)
                self._cond.wait(min(left, poll))


@dataclass
class WatchStats:
    """What one watch thread did: lists (the first and every relist), events received,
    changes reported, expired watches (410) and failed requests."""

    lists: int = 0
    events: int = 0
    changes: int = 0
    expired: int = 0
    failures: int = 0


#: Seconds to connect to the API server, and added to a watch request's own length for the
#: read timeout (a server that stops answering without closing the connection).
CONNECT_TIMEOUT = 5.0
READ_SLACK = 10.0
#: Seconds a list may take.
LIST_TIMEOUT = 60.0


class _Stream:
    """One kind's list + watch, and the states it keeps (the event handling needs no server:
    :meth:`handle` and :meth:`resync` are what the thread calls)."""

    def __init__(
        self,
        kind: str,
        config: ClusterConfig,
        on_change: Callable[[Change], None],
        call: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
    ) -> None:
        self.kind = kind
        self.config = config
        self.on_change = on_change
        self.call = call
        self.args = args
        self.states: dict[tuple[str, str], State] = {}
        self.stats = WatchStats()
        self.synced = threading.Event()

    def _update(self, key: tuple[str, str], new: State | None, what: str | None) -> None:
        if new is None:
            self.states.pop(key, None)
        else:
            self.states[key] = new
        if what is not None:
            self.stats.changes += 1
            self.on_change(Change(self.kind, key[0], key[1], what))

    def handle(self, event: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED); others are ignored."""
        if event not in (ADDED, MODIFIED, DELETED):
            return
        meta = _meta(obj)
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        new, what = classify(self.kind, event, obj, self.states.get(key), self.config)
        self._update(key, new, what)

    def resync(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Take a full list as the truth: every object whose state differs from the one kept
        (new, changed, or no longer listed) is handled as the event that would have said so."""
        listed: dict[tuple[str, str], State | None] = {}
        for obj in items:
            meta = _meta(obj)
            key = (str(meta.get("namespace") or ""), str(meta.get("name")))
            listed[key] = state_of(self.kind, obj, self.config)
        for key in sorted(set(self.states) | set(listed)):
            old, new = self.states.get(key), listed.get(key)
            self._update(key, new, what_changed(self.kind, old, new))

    def relist(self) -> str:
        """List every object, :meth:`resync`, and return the list's resourceVersion."""
        assert self.call is not None
        response = self.call(
            *self.args,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, LIST_TIMEOUT),
        )
        body = json.loads(response.data)
        self.resync(body.get("items") or [])
        self.stats.lists += 1
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])


def _raw_watch() -> Any:
    """A ``kubernetes.watch.Watch`` that hands out events as the API's JSON (no typed models:
    building them costs more than the filter, which reads the JSON): with no return type to
    deserialize into, the client passes each event's object through as it came."""
    from kubernetes import watch

    module: Any = watch  # the client's functions carry no annotations
    w: Any = module.Watch()
    w.get_return_type = lambda func: None
    return w


class ClusterWatch:
    """The three watch threads (pods, Wallets, nodes), reporting each :class:`Change` to
    ``on_change`` (called from those threads). ``api`` is a ``kubernetes.client.ApiClient``;
    the watches use a client of their own built from its configuration, so their long-lived
    connections take none of the apply's pool. Use :meth:`start`, :meth:`wait_synced` and
    :meth:`close` (or ``with``)."""

    def __init__(
        self,
        api: Any,
        config: ClusterConfig,
        on_change: Callable[[Change], None],
        *,
        watch_seconds: int = 1,
        max_backoff: float = 5.0,
    ) -> None:
        from kubernetes import client as k8s

        from allocator.cluster.api import WALLET_GROUP, WALLET_VERSION

        if isinstance(watch_seconds, bool) or not isinstance(watch_seconds, int):
            raise ValueError(f"watch_seconds: must be an integer >= 1, got {watch_seconds!r}")
        if watch_seconds < 1:
            raise ValueError(f"watch_seconds: must be an integer >= 1, got {watch_seconds!r}")
        self._client: Any = k8s.ApiClient(api.configuration)
        core: Any = k8s.CoreV1Api(self._client)
        custom: Any = k8s.CustomObjectsApi(self._client)
        self.streams = {
            POD: _Stream(POD, config, on_change, core.list_pod_for_all_namespaces),
            WALLET: _Stream(
                WALLET,
                config,
                on_change,
                custom.list_cluster_custom_object,
                (WALLET_GROUP, WALLET_VERSION, "wallets"),
            ),
            NODE: _Stream(NODE, config, on_change, core.list_node),
        }
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._watches: dict[str, Any] = {}
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(s,),
                name=f"gpu-allocator-watch-{kind.lower()}s",
                daemon=True,
            )
            for kind, s in self.streams.items()
        ]

    def start(self) -> None:
        """Start the threads (each lists its objects first, then watches)."""
        for t in self._threads:
            t.start()

    def wait_synced(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until every stream has listed once (True), ``timeout`` seconds pass or ``stop``
        is set (False)."""
        deadline = time.monotonic() + timeout
        while not all(s.synced.is_set() for s in self.streams.values()):
            if (stop is not None and stop.is_set()) or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def stats(self) -> dict[str, WatchStats]:
        """Each kind's :class:`WatchStats`."""
        return {kind: s.stats for kind, s in self.streams.items()}

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the threads and wait up to ``timeout`` seconds for them; True if all ended."""
        self._stop.set()
        for w in list(self._watches.values()):
            try:
                w.stop()  # newer clients also shut the socket, ending a blocked read at once
            except Exception:  # best effort: the watch request ends by itself anyway
                log.debug("stopping a watch", exc_info=True)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(max(0.0, deadline - time.monotonic()))
        ended = not any(t.is_alive() for t in self._threads)
        if ended:
            try:
                self._client.rest_client.pool_manager.clear()
            except Exception:
                log.debug("closing the watch connections", exc_info=True)
        return ended

    def __enter__(self) -> ClusterWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, stream: _Stream) -> None:
        from kubernetes.client.exceptions import ApiException

        w = _raw_watch()
        self._watches[stream.kind] = w
        what = f"{stream.kind.lower()}s"
        version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = stream.relist()
                for event in w.stream(
                    stream.call,
                    *stream.args,
                    resource_version=version,
                    timeout_seconds=self.watch_seconds,
                    allow_watch_bookmarks=True,
                    _request_timeout=(CONNECT_TIMEOUT, self.watch_seconds + READ_SLACK),
                ):
                    obj = event.get("raw_object") or event.get("object") or {}
                    version = str(_meta(obj).get("resourceVersion") or version)
                    stream.stats.events += 1
                    stream.handle(str(event.get("type")), obj)
                    if self._stop.is_set():
                        break
                if failures:
                    log.info("watch of %s resumed after %d failed attempt(s)", what, failures)
                failures = 0
                continue
            except ApiException as e:
                if e.status == 410:  # expired: list afresh, then watch from there
                    stream.stats.expired += 1
                    version = None
                    log.debug("watch of %s expired; listing afresh", what)
                    continue
                reason = f"{e.status} {e.reason}"
            except Exception as e:  # the server unreachable, a connection cut, ...
                if self._stop.is_set():
                    break
                reason = f"{type(e).__name__}: {str(e)[:200]}"
            failures += 1
            stream.stats.failures += 1
            backoff = min(self.max_backoff, 0.5 * 2 ** min(failures - 1, 10))
            if failures == 1 or failures % 10 == 0:
                log.warning(
                    "watch of %s failed (%s), attempt %d; retrying in %.1f s (rounds go on at "
                    "the interval meanwhile)",
                    what,
                    reason,
                    failures,
                    backoff,
                )
            self._stop.wait(backoff)
