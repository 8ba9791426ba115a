"""Write each agent's view of a round into the agent's own cluster (the ``gpualloc-market``
ConfigMap; what it holds: :mod:`allocator.cluster.market`).

The allocator reaches an agent's API server with the kubeconfig that vcluster's syncer exports
into the host Secret ``vc-NAME/vc-NAME`` (key ``config``). An agent whose control plane is down
or unreachable must not hold the market up: every call has a short timeout, agents are written
in parallel, and a failure is reported (and retried next round), never raised.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from allocator.cluster.config import agent_namespace
from allocator.cluster.market import agent_views
from allocator.cluster.plan import Plan
from allocator.cluster.read import Snapshot
from allocator.model import ProblemError, Result
from allocator.model.market import MARKET_CONFIGMAP, MARKET_NAMESPACE, MarketView

__all__ = ["KUBECONFIG_KEY", "AgentClusters", "PublishReport", "publish_round"]

log = logging.getLogger(__name__)

#: The key of vcluster's exported kubeconfig in the host Secret ``vc-NAME/vc-NAME``.
KUBECONFIG_KEY = "config"
#: Seconds an agent's API server gets per call before the allocator moves on without it.
AGENT_TIMEOUT_S = 3.0


@dataclass
class PublishReport:
    """Which agents got the round's view, and which could not be reached (and why)."""

    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class AgentClusters:
    """API clients for the agents' own clusters, made from their exported kubeconfigs and kept
    while the Secret is unchanged (one per agent, shared by the rounds of a process)."""

    def __init__(self, host: Any, timeout: float = AGENT_TIMEOUT_S) -> None:
        self._host = k8s.CoreV1Api(host)
        self.timeout = timeout
        self._clients: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def client(self, agent: str) -> Any:
        """The ApiClient of ``agent``'s own cluster; LookupError when its kubeconfig has not
        been exported (its control plane never came up)."""
        ns = agent_namespace(agent)
        try:
            secret = self._host.read_namespaced_secret(
                f"vc-{agent}", ns, _request_timeout=self.timeout
            )
        except ApiException as e:
            if e.status == 404:
                raise LookupError(f"no kubeconfig exported in Secret {ns}/vc-{agent}") from None
            raise
        version = str(secret.metadata.resource_version if secret.metadata else "")
        with self._lock:
            cached = self._clients.get(agent)
            if cached is not None and cached[0] == version:
                return cached[1]
        raw = (secret.data or {}).get(KUBECONFIG_KEY)
        if not raw:
            raise LookupError(f"Secret {ns}/vc-{agent} has no key {KUBECONFIG_KEY!r}")
        loaded: Any = k8s_config
        settings = k8s.Configuration()
        settings.retries = 0  # an unreachable agent costs one timeout a round, not four
        api = loaded.new_client_from_config_dict(
            yaml.safe_load(base64.b64decode(raw)), client_configuration=settings
        )
        with self._lock:
            old = self._clients.get(agent)
            self._clients[agent] = (version, api)
        if old is not None:
            old[1].close()
        return api

    def forget(self, agent: str) -> None:
        """Drop the client of ``agent`` (its cluster changed or went away)."""
        with self._lock:
            old = self._clients.pop(agent, None)
        if old is not None:
            old[1].close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for _, api in clients.values():
            api.close()


def _read_view(core: Any, agent: str, timeout: float) -> MarketView | None:
    try:
        cm = core.read_namespaced_config_map(
            MARKET_CONFIGMAP, MARKET_NAMESPACE, _request_timeout=timeout
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    try:
        view = MarketView.from_configmap_data(cm.data or {})
    except ProblemError as e:
        log.warning("agent %s: its %s ConfigMap is unreadable (%s); starting afresh", agent,
                    MARKET_CONFIGMAP, e)  # fmt: skip
        return None
    return view if view.agent == agent else None


def _write_view(core: Any, view: MarketView, timeout: float) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": MARKET_CONFIGMAP,
            "namespace": MARKET_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "gpu-allocator"},
        },
        "data": view.to_configmap_data(),
    }
    try:
        core.replace_namespaced_config_map(
            MARKET_CONFIGMAP, MARKET_NAMESPACE, body, _request_timeout=timeout
        )
    except ApiException as e:
        if e.status != 404:
            raise
        core.create_namespaced_config_map(MARKET_NAMESPACE, body, _request_timeout=timeout)


def _publish_one(
    clusters: AgentClusters,
    agent: str,
    snap: Snapshot,
    result: Result,
    plan: Plan,
    now: datetime,
) -> None:
    core = k8s.CoreV1Api(clusters.client(agent))
    previous = _read_view(core, agent, clusters.timeout)
    view = agent_views(snap, result, plan, {agent: previous}, now)[agent]
    _write_view(core, view, clusters.timeout)


def publish_round(
    clusters: AgentClusters,
    snap: Snapshot,
    result: Result,
    plan: Plan,
    *,
    now: datetime | None = None,
    workers: int = 8,
) -> PublishReport:
    """Write the round's view into every agent's cluster (agents with a Wallet in the round),
    ``workers`` at a time; an agent that cannot be reached is listed in the report, not
    raised."""
    now = now or datetime.now(UTC)
    report = PublishReport()
    agents = sorted(snap.agent_wallets)
    if not agents:
        return report
    results: Mapping[str, BaseException | None]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(agents)))) as pool:
        futures = {
            a: pool.submit(_publish_one, clusters, a, snap, result, plan, now) for a in agents
        }
        results = {a: f.exception() for a, f in futures.items()}
    for agent, error in results.items():
        if error is None:
            report.written.append(agent)
        else:
            report.failed[agent] = f"{type(error).__name__}: {error}"
            clusters.forget(agent)
            log.warning("round %s: agent %s not told: %s", result.round_id, agent, error)
    return report
