"""The agent's client: its workloads and the market, through its own API server only.

:class:`AgentClient` needs nothing but the agent's kubeconfig (in a vcluster: the virtual
cluster's). It creates and changes pods (the bids), reads their state and Events, and reads the
``gpualloc-market`` ConfigMap the allocator writes there each round. Answers are read as plain
API JSON, the same the allocator's reader takes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allocator.agent.policy import RoundView
from allocator.agent.status import WorkloadStatus, gone_status, workload_statuses
from allocator.agent.workload import (
    ANNOTATION_BID,
    DEFAULT_IMAGE,
    LABEL_WORKLOAD,
    SCHEDULER_NAME,
    SHARE_RESOURCE,
    WorkloadSpec,
    spec_from_pods,
    split_bid,
)
from allocator.model import ProblemError
from allocator.model.market import (
    MARKET_CONFIGMAP,
    MARKET_NAMESPACE,
    MarketView,
    WalletView,
)

__all__ = ["AgentClient", "Workload", "WorkloadError", "WorkloadNotFound"]

log = logging.getLogger("allocator.agent")


class WorkloadError(RuntimeError):
    """The workload is not in a state that allows the request (already exists, running, ...)."""


class WorkloadNotFound(WorkloadError, LookupError):
    """No pod of that workload exists."""


@dataclass(frozen=True)
class Workload:
    """A workload just created: its namespace, pod names and spec."""

    name: str
    namespace: str
    pods: tuple[str, ...]
    spec: WorkloadSpec


def _read(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """``call(*args, **kwargs)``'s raw body (no typed model built), read to the end so that the
    connection goes back to the pool."""
    data: bytes = call(*args, _preload_content=False, **kwargs).data
    return data


def _api_client(kubeconfig: str | Path | None) -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    k8s_config: Any = config  # the package is untyped
    if kubeconfig is not None:
        return k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        return k8s_config.new_client_from_config()
    except (ConfigException, FileNotFoundError, TypeError):
        k8s_config.load_incluster_config()
        return client.ApiClient()


class AgentClient:
    """The agent's handle on its own cluster.

    Parameters
    ----------
    kubeconfig
        The agent's kubeconfig (None: ``$KUBECONFIG`` or ``~/.kube/config``, else in-cluster).
    namespace
        Where its workloads' pods live.
    api_client
        A ready ``kubernetes.client.ApiClient`` instead of a kubeconfig (tests, custom auth).
    scheduler_name, share_resource
        The allocator's scheduler name and fractional-share resource (the cluster's settings).
    market_namespace, market_name
        Where the allocator writes the market ConfigMap.
    """

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        namespace: str = "default",
        *,
        api_client: Any = None,
        scheduler_name: str = SCHEDULER_NAME,
        share_resource: str = SHARE_RESOURCE,
        market_namespace: str = MARKET_NAMESPACE,
        market_name: str = MARKET_CONFIGMAP,
    ) -> None:
        from kubernetes.client import CoreV1Api

        self.api_client = api_client if api_client is not None else _api_client(kubeconfig)
        self.namespace = namespace
        self.scheduler_name = scheduler_name
        self.share_resource = share_resource
        self.market_namespace = market_namespace
        self.market_name = market_name
        self._core = CoreV1Api(self.api_client)

    # --- workloads -------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        *,
        bid: float,
        gpus: int | None = None,
        mig_profile: str | None = None,
        milli: int | None = None,
        replicas: int = 1,
        locality: str = "any",
        cpu: str = "1",
        memory: str = "1Gi",
        image: str = DEFAULT_IMAGE,
        max_price: float | None = None,
        command: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Workload:
        """Create workload ``name``: ``replicas`` pods (more than one: a gang ``name-0`` ..
        ``name-(replicas-1)``), each asking for ``gpus`` whole GPUs (default 1), or ``gpus``
        instances of ``mig_profile``, or a ``milli``-GPU share, worth ``bid`` in all. ValueError
        naming the argument when one is invalid; WorkloadError when pods of that workload
        exist already."""
        spec = WorkloadSpec(
            name=name,
            bid=bid,
            gpus=gpus,
            mig_profile=mig_profile,
            milli=milli,
            replicas=replicas,
            locality=locality,
            cpu=cpu,
            memory=memory,
            image=image,
            max_price=max_price,
            command=tuple(command),
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            scheduler_name=self.scheduler_name,
            share_resource=self.share_resource,
        )
        return self.submit_spec(spec)

    def submit_spec(self, spec: WorkloadSpec) -> Workload:
        """Create the pods of ``spec`` (all or none: a failure deletes those created), with
        this client's scheduler name and share resource."""
        from kubernetes.client.exceptions import ApiException

        spec = spec.with_changes(
            scheduler_name=self.scheduler_name, share_resource=self.share_resource
        )
        if self._pods(spec.name):
            raise WorkloadError(f"name: workload {spec.name!r} already has pods")
        created: list[str] = []
        try:
            for manifest in spec.pods():
                _read(self._core.create_namespaced_pod, self.namespace, manifest)
                created.append(manifest["metadata"]["name"])
        except ApiException as e:
            for pod in created:
                self._delete(pod)
            if e.status == 409:
                raise WorkloadError(f"name: a pod of workload {spec.name!r} exists") from e
            raise
        log.info(
            "submitted %s: %d pod(s), bid %g, %s", spec.name, spec.replicas, spec.bid, spec.kind
        )
        return Workload(spec.name, self.namespace, spec.pod_names, spec)

    def set_bid(self, name: str, value: float) -> int:
        """Re-price the waiting (unbound) pods of workload ``name`` to ``value`` in all (split
        as at submit); returns how many pods were patched. ValueError for a bad value or one
        above the workload's ``max_price``; WorkloadNotFound, or WorkloadError when no pod of
        it waits."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"value: not a number: {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"value: must be finite and >= 0, got {value!r}")
        pods = self._live_pods(name)
        waiting = [p for p in pods if not (p.get("spec") or {}).get("nodeName")]
        if not waiting:
            raise WorkloadError(f"name: workload {name!r} has no pending pod to re-price")
        spec = spec_from_pods(pods)
        if spec.max_price is not None and value > spec.max_price:
            raise ValueError(
                f"value: {value:g} is above the workload's max_price {spec.max_price:g}"
            )
        names = sorted(str(p["metadata"]["name"]) for p in waiting)
        parts = split_bid(float(value), names)
        for pod in names:
            patch = {"metadata": {"annotations": {ANNOTATION_BID: parts[pod]}}}
            _read(self._core.patch_namespaced_pod, pod, self.namespace, patch)
        log.info("re-priced %s: %g over %d pod(s)", name, value, len(names))
        return len(names)

    def withdraw(self, name: str) -> int:
        """Delete every pod of workload ``name`` (running ones too); returns how many."""
        pods = self._pods(name)
        for p in pods:
            self._delete(str(p["metadata"]["name"]))
        log.info("withdrew %s: %d pod(s)", name, len(pods))
        return len(pods)

    def resize(
        self,
        name: str,
        *,
        replicas: int | None = None,
        mig_profile: str | None = None,
        bid: float | None = None,
    ) -> Workload:
        """Replace waiting workload ``name`` by one of ``replicas`` pods and/or MIG profile
        ``mig_profile`` (None: unchanged) worth ``bid`` (None: its current total bid).

        Kubernetes cannot change a pod's requests, so this **deletes the workload's pods and
        creates new ones** under the same names; a round that reads the namespace in between
        sees no bid (or, mid-create, part of a gang). Every pod must be waiting: WorkloadError
        otherwise (a running workload is withdrawn and submitted anew instead)."""
        pods = self._live_pods(name)
        if any((p.get("spec") or {}).get("nodeName") for p in pods):
            raise WorkloadError(f"name: workload {name!r} has running pods; resize needs pending")
        spec = spec_from_pods(pods)
        if mig_profile is not None and spec.mig_profile is None:
            raise ValueError(f"mig_profile: workload {name!r} does not ask for MIG instances")
        changes: dict[str, Any] = {}
        if replicas is not None:
            changes["replicas"] = replicas
        if mig_profile is not None:
            changes["mig_profile"] = mig_profile
        if bid is not None:
            changes["bid"] = bid
        new = spec.with_changes(**changes)  # validated before anything is deleted
        for p in pods:
            self._delete(str(p["metadata"]["name"]), grace_period_seconds=0)
        self._wait_gone(name)
        log.info(
            "resized %s: %d x %s -> %d x %s",
            name,
            spec.replicas,
            spec.mig_profile or spec.kind,
            new.replicas,
            new.mig_profile or new.kind,
        )
        return self.submit_spec(new)

    # --- reading ---------------------------------------------------------------------------

    def workloads(self) -> list[WorkloadStatus]:
        """The status of every workload of the namespace (see ``allocator.agent.status``)."""
        pods = self._list_pods(LABEL_WORKLOAD)
        return workload_statuses(
            pods, namespace=self.namespace, market=self._market_if_valid(), events=self._events()
        )

    def status(self, name: str) -> WorkloadStatus:
        """The status of workload ``name`` (phase ``gone`` when it has no pods)."""
        pods = self._pods(name)
        market = self._market_if_valid()
        if not pods:
            return gone_status(name, namespace=self.namespace, market=market)
        (found,) = workload_statuses(
            pods, namespace=self.namespace, market=market, events=self._events()
        )
        return found

    def market(self) -> MarketView | None:
        """The market ConfigMap, or None before the allocator wrote one. ProblemError (naming
        the key) when it is malformed."""
        data = self._market_data()
        return None if data is None else MarketView.from_configmap_data(data)

    def _market_data(self) -> dict[str, Any] | None:
        """The market ConfigMap's ``data`` as stored, or None before the allocator wrote one."""
        from kubernetes.client.exceptions import ApiException

        try:
            raw = _read(
                self._core.read_namespaced_config_map, self.market_name, self.market_namespace
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(raw).get("data") or {}
        return data

    def _market_if_valid(self) -> MarketView | None:
        """The market, or None (with a warning) when the ConfigMap is malformed: the status of
        a workload then rests on its pods and Events."""
        try:
            return self.market()
        except ProblemError as e:
            log.warning("market ConfigMap malformed, ignored: %s", e)
            return None

    def wallet(self) -> WalletView | None:
        """The agent's wallet as of the last round, or None."""
        market = self.market()
        return market.wallet if market else None

    def quote(self, model_or_profile: str) -> float | None:
        """The latest clearing price per GPU-equivalent of a GPU model, or of a MIG profile
        (the cheapest model ending with ``-MIG-<profile>``); None when the market has none."""
        market = self.market()
        return market.quote(model_or_profile) if market else None

    def round_id(self) -> str | None:
        """The id of the last round the market ConfigMap reports, or None."""
        value = (self._market_data() or {}).get("round")
        return value if isinstance(value, str) and value else None

    def wait_for_round(
        self,
        after: str | None = None,
        timeout: float = 120.0,
        *,
        poll: float = 1.0,
        stop: Callable[[], bool] | None = None,
    ) -> str:
        """Poll the market ConfigMap every ``poll`` seconds until it reports a round other than
        ``after`` (None: any round), and return its id. TimeoutError after ``timeout``
        seconds; InterruptedError when ``stop()`` becomes true."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.round_id()
            if current is not None and current != after:
                return current
            if stop is not None and stop():
                raise InterruptedError("stopped while waiting for a round")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no round after {after!r} within {timeout:g} s")
            time.sleep(min(poll, left))

    def view(self, round_id: str, now: datetime | None = None) -> RoundView:
        """What a policy sees at this moment of round ``round_id``."""
        market = self.market()
        pods = self._list_pods(LABEL_WORKLOAD)
        statuses = workload_statuses(
            pods, namespace=self.namespace, market=market, events=self._events()
        )
        return RoundView(
            round_id=round_id,
            now=now or datetime.now(UTC),
            workloads=tuple(statuses),
            market=market,
            wallet=market.wallet if market else None,
        )

    # --- API calls -------------------------------------------------------------------------

    def _list_pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": selector, "limit": 500}
            if token:
                kwargs["_continue"] = token
            page = json.loads(_read(self._core.list_namespaced_pod, self.namespace, **kwargs))
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _pods(self, name: str) -> list[dict[str, Any]]:
        return self._list_pods(f"{LABEL_WORKLOAD}={name}")

    def _live_pods(self, name: str) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self._pods(name)
            if not (p.get("metadata") or {}).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if not pods:
            raise WorkloadNotFound(f"name: no workload {name!r} in {self.namespace}")
        return pods

    def _events(self) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            raw = _read(
                self._core.list_namespaced_event,
                self.namespace,
                field_selector="involvedObject.kind=Pod",
            )
        except ApiException as e:
            log.warning("cannot list events in %s (%s)", self.namespace, e.status)
            return []
        items: list[dict[str, Any]] = json.loads(raw).get("items") or []
        return items

    def _delete(self, pod: str, grace_period_seconds: int | None = None) -> None:
        from kubernetes.client.exceptions import ApiException

        kwargs: dict[str, Any] = {}
        if grace_period_seconds is not None:
            kwargs["grace_period_seconds"] = grace_period_seconds
        try:
            _read(self._core.delete_namespaced_pod, pod, self.namespace, **kwargs)
        except ApiException as e:
            if e.status != 404:
                raise

    def _wait_gone(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pods(name):
            if time.monotonic() > deadline:
                raise WorkloadError(f"name: pods of {name!r} still there after {timeout:g} s")
            time.sleep(0.1)
