"""Where each of the agent's workloads stands, from its pods, Events and the market ConfigMap
(pure: API JSON in, frozen data out).

A workload's **phase**:

- ``pending``: some pod waits for a round and no round has said it lost (yet);
- ``lost-and-pending``: some pod waits and the last round's outcome for it is a loss
  (``outbid``, ``does_not_fit``, ``over_budget``, ``below_reserve``, ``skipped``);
- ``running``: every live pod is bound to a node;
- ``gone``: no live pod (withdrawn, evicted, finished, or never submitted).

Its **last outcome** is the market ConfigMap's entry for its pods, or, when the ConfigMap has
none, the latest of the allocator's Events about them (reasons ``Won``, ``Outbid``, ...). An
entry or Event older than the pod (a round that ran before the pod was created, about an
earlier pod of the same name) is not the pod's and is ignored.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from allocator.agent.workload import (
    ANNOTATION_BID,
    ANNOTATION_GPUS,
    ANNOTATION_PRICE,
    ANNOTATION_ROUND,
    LABEL_WORKLOAD,
    WorkloadSpec,
    spec_from_pods,
)
from allocator.model import ProblemError
from allocator.model.market import OUTCOME_OF_REASON, MarketView, PodOutcome, parse_time

__all__ = ["Phase", "PodState", "WorkloadStatus", "gone_status", "workload_statuses"]

Phase = Literal["pending", "lost-and-pending", "running", "gone"]
OutcomeSource = Literal["market", "event"]

_ROUND_IN_MESSAGE = re.compile(r"^round (\S+?):")
_PAYS_FOR_POD = re.compile(r"\(([0-9.eE+-]+) for this pod\)")


@dataclass(frozen=True, slots=True)
class PodState:
    """One pod of a workload: its name in the agent's cluster, Kubernetes phase, node and GPUs
    (from ``gpualloc.io/gpus``), its share of the bid, the price it paid (``gpualloc.io/price``)
    and the round that bound it (``gpualloc.io/round``)."""

    name: str
    phase: str
    node: str | None = None
    gpus: tuple[int, ...] = ()
    bid: float | None = None
    price: float | None = None
    round_id: str | None = None
    deleting: bool = False
    created: datetime | None = None
    uid: str | None = None

    @property
    def live(self) -> bool:
        """Not being deleted and not finished."""
        return not self.deleting and self.phase not in ("Succeeded", "Failed")

    @property
    def waiting(self) -> bool:
        """Live and not bound to a node."""
        return self.live and self.node is None


@dataclass(frozen=True)
class WorkloadStatus:
    """A workload's phase, pods, the bid of its waiting pods, the price its bound pods paid
    (summed; None when none says), its last outcome and where that came from, and its spec as
    read back from the pods (None when gone)."""

    name: str
    phase: Phase
    pods: tuple[PodState, ...] = ()
    spec: WorkloadSpec | None = None
    bid: float | None = None
    price: float | None = None
    outcome: PodOutcome | None = None
    outcome_source: OutcomeSource | None = None

    @property
    def waiting(self) -> bool:
        """Pending or lost-and-pending: a bid the next round reads."""
        return self.phase in ("pending", "lost-and-pending")

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes its live pods are bound to (sorted, each once)."""
        return tuple(sorted({p.node for p in self.pods if p.live and p.node}))

    @property
    def gpus(self) -> Mapping[str, tuple[int, ...]]:
        """GPU indices of each bound live pod."""
        return {p.name: p.gpus for p in self.pods if p.live and p.node}

    @property
    def replicas(self) -> int:
        """How many live pods it has."""
        return sum(1 for p in self.pods if p.live)


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text, "")
    except ProblemError:
        return None


def _float(text: Any) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _gpus(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(text).split(",")) if text else ()
    except ValueError:
        return ()


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """A pod's :class:`PodState` from its API JSON."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    return PodState(
        name=str(meta.get("name")),
        phase=str((pod.get("status") or {}).get("phase") or "Pending"),
        node=(pod.get("spec") or {}).get("nodeName") or None,
        gpus=_gpus(ann.get(ANNOTATION_GPUS)),
        bid=_float(ann.get(ANNOTATION_BID)),
        price=_float(ann.get(ANNOTATION_PRICE)),
        round_id=ann.get(ANNOTATION_ROUND),
        deleting=bool(meta.get("deletionTimestamp")),
        created=_time(meta.get("creationTimestamp")),
        uid=meta.get("uid"),
    )


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if t := _time(event.get(key)):
            return t
    return _time((event.get("metadata") or {}).get("creationTimestamp"))


def _market_outcome(
    market: MarketView | None, namespace: str, pods: Sequence[PodState]
) -> PodOutcome | None:
    """The newest ConfigMap outcome of any of ``pods`` that is not older than the pod."""
    if market is None:
        return None
    best: tuple[datetime, PodOutcome] | None = None
    for p in pods:
        o = market.outcomes.get(f"{namespace}/{p.name}")
        if o is None:
            continue
        when = market.round_time(o.round_id)
        if when is not None and p.created is not None and when < p.created:
            continue  # a round before this pod existed: about an earlier pod of that name
        key = when or market.updated
        if best is None or key > best[0]:
            best = (key, o)
    return best[1] if best else None


def _event_outcome(
    events: Sequence[Mapping[str, Any]], pods: Sequence[PodState]
) -> PodOutcome | None:
    """The newest of the allocator's Events (reasons ``Won``, ``Outbid``, ...) about any of
    ``pods``, as a PodOutcome (round and payment read from its message)."""
    by_name = {p.name: p for p in pods}
    best: tuple[datetime, Mapping[str, Any], PodState] | None = None
    for ev in events:
        obj = ev.get("involvedObject") or {}
        pod = by_name.get(str(obj.get("name")))
        if pod is None or obj.get("kind", "Pod") != "Pod":
            continue
        if ev.get("reason") not in OUTCOME_OF_REASON:
            continue
        when = _event_time(ev)
        if when is None:
            continue
        same_pod = pod.uid is not None and obj.get("uid") == pod.uid
        if not same_pod and pod.created is not None and when < pod.created:
            continue  # about an earlier pod of that name
        if best is None or when > best[0]:
            best = (when, ev, pod)
    if best is None:
        return None
    _, ev, pod = best
    message = str(ev.get("message") or "")
    m = _ROUND_IN_MESSAGE.match(message)
    pays = _PAYS_FOR_POD.search(message)
    won = OUTCOME_OF_REASON[str(ev["reason"])] == "won"
    return PodOutcome(
        round_id=m.group(1) if m else "unknown",
        outcome=OUTCOME_OF_REASON[str(ev["reason"])],
        bid=None,
        payment=_float(pays.group(1)) if pays and won else None,
        node=pod.node if won else None,
        gpus=pod.gpus if won else (),
        message=message,
    )


def _status(
    name: str,
    pods: Sequence[Mapping[str, Any]],
    namespace: str,
    market: MarketView | None,
    events: Sequence[Mapping[str, Any]],
) -> WorkloadStatus:
    states = tuple(sorted((pod_state(p) for p in pods), key=lambda s: s.name))
    live = [s for s in states if s.live]
    outcome: PodOutcome | None = _market_outcome(market, namespace, states)
    source: OutcomeSource | None = "market" if outcome else None
    if outcome is None:
        outcome = _event_outcome(events, states)
        source = "event" if outcome else None
    phase: Phase
    if not live:
        phase = "gone"
    elif any(s.waiting for s in live):
        phase = "lost-and-pending" if outcome is not None and outcome.lost else "pending"
    else:
        phase = "running"
    try:
        live_json = [p for p, s in zip(_sorted(pods), states, strict=True) if s.live]
        spec = spec_from_pods(live_json) if live_json else None
    except ValueError:
        spec = None
    waiting = [s.bid for s in live if s.waiting]
    paid = [s.price for s in live if s.node and s.price is not None]
    return WorkloadStatus(
        name=name,
        phase=phase,
        pods=states,
        spec=spec,
        bid=sum(b for b in waiting if b is not None) if waiting else None,
        price=sum(paid) if paid else None,
        outcome=outcome,
        outcome_source=source,
    )


def _sorted(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name")))


def workload_statuses(
    pods: Sequence[Mapping[str, Any]],
    *,
    namespace: str,
    market: MarketView | None = None,
    events: Sequence[Mapping[str, Any]] = (),
) -> list[WorkloadStatus]:
    """The status of every workload among ``pods`` (API JSON of the namespace's pods; those
    without the ``gpualloc.io/workload`` label are not the SDK's and are ignored), by name."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for p in pods:
        name = ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKLOAD)
        if name:
            groups[name].append(p)
    return [_status(n, groups[n], namespace, market, events) for n in sorted(groups)]


def gone_status(name: str, *, namespace: str, market: MarketView | None = None) -> WorkloadStatus:
    """The status of a workload with no pods: ``gone``, with the ConfigMap's last outcome of a
    pod that was its (``name`` or ``name-<i>``), if any."""
    outcome = None
    if market is not None:
        pattern = re.compile(rf"^{re.escape(namespace)}/{re.escape(name)}(-[0-9]+)?$")
        found = [o for pod, o in sorted(market.outcomes.items()) if pattern.match(pod)]
        outcome = found[0] if found else None
    return WorkloadStatus(
        name=name,
        phase="gone",
        outcome=outcome,
        outcome_source="market" if outcome else None,
    )
