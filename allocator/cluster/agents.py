"""The host side of an agent: its namespace, Wallet, the syncer's identity and rights, and the
admission policy that keeps its pods honest (``gpu-allocator agent create | delete | list``).

An agent NAME is a virtual cluster (vcluster) whose syncer copies the agent's pods into the host
namespace ``vc-NAME``, where the allocator places them by auction. The names are the pure
conventions of :mod:`allocator.cluster.config` (``AGENT_LABEL``, ``agent_namespace``,
``agent_wallet``, ``check_agent_name``). What :func:`create_agent` makes, in this order:

1. cluster-wide, once: the ValidatingAdmissionPolicy ``gpualloc-agent-pods`` and its binding
   (:func:`admission_objects`), so that nothing the syncer does is ever unchecked;
2. the namespace ``vc-NAME`` labelled ``gpualloc.io/agent=NAME`` (the label is how the policy and
   the allocator recognise an agent's pods);
3. the Wallet ``vc-NAME/NAME`` (same label): the agent's money, kept on the host, never in the
   agent's cluster;
4. what vcluster expects in its host namespace: the Service ``NAME`` (the syncer discovers the
   service CIDR from it; in a real cluster it fronts vcluster's pod) and the ServiceAccount
   ``vc-workload-NAME`` (the agent's pods run as it on the host);
5. the syncer's ServiceAccount ``vc-NAME``; then, once the policy is seen enforced in
   ``vc-NAME``, its Role + RoleBinding (:data:`SYNCER_RULES`: only that namespace, no binding, no
   eviction, no Wallets);
6. a Role + RoleBinding that let the allocator's ServiceAccount read the one Secret ``vc-NAME``
   (the agent's kubeconfig, exported by vcluster), by name.

Every input is checked before the first write (:class:`AgentSpec`); a write that fails midway
raises :class:`AgentError` listing what was created, which ``agent delete NAME`` removes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from allocator.cluster.api import WALLET_GROUP, WALLET_VERSION
from allocator.cluster.config import AGENT_LABEL, agent_namespace, check_agent_name
from allocator.cluster.read import _is_running, _wallet_balance, go_duration
from allocator.model import ProblemError

__all__ = [
    "ALLOCATOR_KUBECONFIG_ROLE",
    "DEFAULT_ALLOCATOR_ACCOUNT",
    "HOST_CONTROLLERS",
    "POLICY_NAME",
    "SYNCER_RULES",
    "AgentError",
    "AgentInfo",
    "AgentSpec",
    "CreateReport",
    "DeleteReport",
    "admission_objects",
    "agent_objects",
    "create_agent",
    "delete_agent",
    "kubeconfig_secret",
    "list_agents",
    "syncer_account",
    "wait_for_admission",
    "workload_account",
]

POLICY_NAME = "gpualloc-agent-pods"
ALLOCATOR_KUBECONFIG_ROLE = "gpualloc-allocator-kubeconfig"
# The chart's ServiceAccount for `helm install gpu-allocator charts/gpu-allocator -n
# gpu-allocator` (its fullname is the release name when that holds the chart's name).
DEFAULT_ALLOCATOR_ACCOUNT = ("gpu-allocator", "gpu-allocator")
# Who may create pods in an agent's namespace unchecked: the host's StatefulSet controller, which
# runs vcluster's own control-plane pod there when vcluster is installed with its chart (with
# per-controller credentials, or the controller manager's shared ones). Agents cannot act as it:
# their syncer has no right on StatefulSets, and a name cannot be forged past authentication.
HOST_CONTROLLERS = (
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:statefulset-controller",
)
ANNOTATION_WALLET = "gpualloc.io/wallet"
ANNOTATION_SPEC_DIGEST = "gpualloc.io/spec-digest"
ANNOTATION_SCHEDULER = "gpualloc.io/scheduler-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpu-allocator"}
_PROBE_POD = "gpualloc-admission-probe"


def syncer_account(name: str) -> str:
    """The ServiceAccount (in ``vc-NAME``) that agent ``name``'s syncer runs as: ``vc-NAME``,
    the name vcluster's chart gives it."""
    return "vc-" + name


def workload_account(name: str) -> str:
    """The ServiceAccount (in ``vc-NAME``) the agent's pods run as on the host."""
    return "vc-workload-" + name


def kubeconfig_secret(name: str) -> str:
    """The Secret (in ``vc-NAME``) where vcluster exports the agent's kubeconfig."""
    return "vc-" + name


# The syncer's rights, in its host namespace only (a Role, never a ClusterRole), derived from
# vcluster v0.30.0's chart (chart/templates/role.yaml) for deploy/vcluster/agent-values.yaml:
# pods, services, configmaps and secrets synced to the host, events from it, fake nodes (no node
# sync), one replica. Each rule with why the syncer needs it. Deliberately absent: pods/binding
# and pods/eviction (placing and preempting are the auction's), gpualloc.io (Wallets and rounds
# are the host's), writes to persistentvolumeclaims, endpoints and endpointslices (their sync is
# off; the syncer only watches them), serviceaccounts (the workload one is made here), leases
# (one replica: no leader election), the chart's read of apps/statefulsets, replicasets and
# deployments (no code of the v0.30.0 syncer reads them on the host; its CLI does, with the
# user's own credentials) and anything cluster-wide (fake nodes: no node is read).
SYNCER_RULES: tuple[tuple[dict[str, Any], str], ...] = (
    (
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        },
        "the agent's pods, created on the host (sync.toHost.pods), updated when the agent "
        "changes them, deleted with them; watched to copy node, status and annotations back",
    ),
    (
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
        "pod conditions the agent's cluster sets (readiness gates) copied onto the host pod",
    ),
    (
        {
            "apiGroups": [""],
            "resources": ["pods/ephemeralcontainers"],
            "verbs": ["patch", "update"],
        },
        "`kubectl debug` in the agent's cluster adds an ephemeral container to the host pod",
    ),
    (
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        "`kubectl logs` in the agent's cluster reads the host pod's log",
    ),
    (
        {
            "apiGroups": [""],
            "resources": ["pods/attach", "pods/exec", "pods/portforward"],
            "verbs": ["create", "get"],
        },
        "`kubectl attach|exec|port-forward` in the agent's cluster, proxied to the host pod "
        "(create: SPDY's POST; get: WebSocket's GET)",
    ),
    (
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        },
        "the agent's Services (sync.toHost.services); the Service NAME is read for the service "
        "CIDR (found with a probe Service created and deleted) and annotated with it; the "
        "Services behind the fake nodes' kubelets",
    ),
    (
        {
            "apiGroups": [""],
            "resources": ["configmaps", "secrets"],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        },
        "the ConfigMaps and Secrets the agent's pods use (sync.toHost.configMaps/secrets, "
        "used ones only); Secrets also hold vcluster's own state: its config vc-config-NAME "
        "(read), its certificates and the exported kubeconfig vc-NAME (written)",
    ),
    (
        {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "list", "watch"]},
        "the endpoints of the Service NAME, mirrored into the agent's default/kubernetes "
        "Service (read only: sync.toHost.endpoints is off)",
    ),
    (
        {
            "apiGroups": [""],
            "resources": ["persistentvolumeclaims"],
            "verbs": ["get", "list", "watch"],
        },
        "read only: the syncer's pod controller watches the host's PVCs of its namespace even "
        "with sync.toHost.persistentVolumeClaims off (its cache never syncs without the right, "
        "and then no pod is synced; seen with v0.30.0)",
    ),
    (
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        "the EndpointSlices of the Service NAME, read like its Endpoints (the syncer watches them "
        "even with sync.toHost.endpointSlices off: without the right its cache never syncs and "
        "no pod is synced; seen with v0.30.0)",
    ),
    (
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "list", "watch"]},
        "host events about the agent's pods (the allocator's Won, Outbid, ...) copied into the "
        "agent's cluster (sync.fromHost.events); create: the syncer's own events",
    ),
)

_SCHEDULER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_AMOUNT = 1e12  # the Wallet CRD's maximum of balance and incomePerPeriod


@dataclass(frozen=True)
class AgentSpec:
    """What ``agent create`` makes for agent ``name``, checked on construction (ProblemError
    naming the parameter): the Wallet's ``balance``, ``income`` per ``period`` (a Go duration)
    and ``priority`` (as the Wallet CRD bounds them), the allocator's ``scheduler_name`` (which
    the admission policy requires of every pod) and its ServiceAccount ``allocator_account``
    (namespace, name), which may read the agent's exported kubeconfig."""

    name: str
    balance: float
    income: float = 0.0
    period: str = "24h"
    priority: int = 0
    scheduler_name: str = "gpu-allocator"
    allocator_account: tuple[str, str] = DEFAULT_ALLOCATOR_ACCOUNT

    def __post_init__(self) -> None:
        try:
            check_agent_name(self.name)
        except ValueError as e:
            raise ProblemError("name", str(e)) from None
        for key in ("balance", "income"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= _MAX_AMOUNT
            ):
                raise ProblemError(key, f"must be a number in 0..{_MAX_AMOUNT:g}, got {value!r}")
        try:
            go_duration(self.period, "period")
        except ValueError as e:
            raise ProblemError("period", str(e).partition(": ")[2]) from None
        if not re.fullmatch(r"([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+", self.period):
            # The CRD's pattern (no 'µs'), so that the API server takes what passes here.
            raise ProblemError("period", f"not a Go duration the Wallet takes: {self.period!r}")
        p = self.priority
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 1000:
            raise ProblemError("priority", f"must be an integer in 0..1000, got {p!r}")
        s = self.scheduler_name
        if not isinstance(s, str) or len(s) > 253 or not _SCHEDULER_NAME.match(s):
            raise ProblemError("scheduler_name", f"must be a DNS-1123 subdomain, got {s!r}")
        acct = self.allocator_account
        if (
            not isinstance(acct, tuple)
            or len(acct) != 2
            or not all(isinstance(x, str) and _SCHEDULER_NAME.match(x) for x in acct)
        ):
            raise ProblemError(
                "allocator_account", f"must be (namespace, name) of a ServiceAccount, got {acct!r}"
            )


def _meta(name: str, namespace: str | None, agent: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {AGENT_LABEL: agent, **MANAGED_BY}}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def agent_objects(spec: AgentSpec) -> list[dict[str, Any]]:
    """The objects of agent ``spec.name`` in its host namespace, namespace first, in the order
    :func:`create_agent` writes them (the syncer's Role and RoleBinding are the last but two, its
    ServiceAccount just before them, the allocator's Role and RoleBinding last)."""
    name = spec.name
    ns = agent_namespace(name)
    sa_ns, sa_name = spec.allocator_account
    wallet_spec: dict[str, Any] = {
        "balance": spec.balance,
        "incomePerPeriod": spec.income,
        "period": spec.period,
        "priority": spec.priority,
    }
    # The Service vcluster's chart would make (deploy/vcluster/agent-values.yaml turns that off):
    # its API server (the Service's 443) and the fake nodes' kubelets (10250), both on the
    # vcluster pod's 8443, chosen by the chart's pod labels. The exported kubeconfig names
    # https://NAME.vc-NAME:443, which vcluster's serving certificate covers.
    service_meta = _meta(name, ns, name)
    service_meta["labels"].update({"app": "vcluster", "release": name})
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, None, name)},
        {
            "apiVersion": f"{WALLET_GROUP}/{WALLET_VERSION}",
            "kind": "Wallet",
            "metadata": _meta(name, ns, name),
            "spec": wallet_spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": service_meta,
            "spec": {
                "type": "ClusterIP",
                "ports": [
                    {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                    {"name": "kubelet", "port": 10250, "targetPort": 8443, "protocol": "TCP"},
                ],
                "selector": {"app": "vcluster", "release": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(workload_account(name), ns, name),
            # The agent's pods get their tokens from the agent's cluster, not from the host.
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(syncer_account(name), ns, name),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(syncer_account(name), ns, name),
            "rules": [rule for rule, _ in SYNCER_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(syncer_account(name), ns, name),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": syncer_account(name),
            },
            "subjects": [{"kind": "ServiceAccount", "name": syncer_account(name), "namespace": ns}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(ALLOCATOR_KUBECONFIG_ROLE, ns, name),
            # One Secret, by name: the chart's ClusterRole cannot name agents in advance, and
            # a cluster-wide right to Secrets would read every tenant's.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [kubeconfig_secret(name)],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(ALLOCATOR_KUBECONFIG_ROLE, ns, name),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": ALLOCATOR_KUBECONFIG_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}],
        },
    ]


def admission_objects(scheduler_name: str = "gpu-allocator") -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy ``gpualloc-agent-pods`` and its binding: in every namespace
    labelled ``gpualloc.io/agent``, a pod is refused (naming the field) when it is created with a
    ``spec.nodeName`` (placing is the auction's), created with a ``spec.schedulerName`` other than
    ``scheduler_name``, or created or changed to name a Wallet (``gpualloc.io/wallet``) other
    than the agent's own.

    What is not refused: the allocator's Binding (the ``pods/binding`` subresource is not
    matched) and its annotations at bind time, a kubelet's or the syncer's updates of a pod and
    its status (``spec.nodeName`` and ``spec.schedulerName`` cannot change after creation, and the
    Wallet rule looks at a change of the annotation only), and the pods the host's StatefulSet
    controller creates (:data:`HOST_CONTROLLERS`: vcluster's own pod, installed with its chart).
    The selector is on the policy and on the binding, so that the policy never applies outside
    agents' namespaces, where the namespace label it names is missing."""
    if not _SCHEDULER_NAME.match(scheduler_name):
        raise ProblemError("scheduler_name", f"must be a DNS-1123 subdomain: {scheduler_name!r}")
    selector = {"matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}]}
    sched = json.dumps(scheduler_name)  # a CEL string literal (JSON's escapes are CEL's)
    ann = json.dumps(ANNOTATION_WALLET)
    agent_of = "pods of agent ' + variables.agent + '"
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "namespaceSelector": selector,
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    # Annotations can be changed through the status subresource too.
                    "resources": ["pods", "pods/status"],
                }
            ],
        },
        "matchConditions": [
            {
                "name": "not-a-host-controller",
                "expression": "!(request.userInfo.username in "
                + json.dumps(list(HOST_CONTROLLERS))
                + ")",
            }
        ],
        "variables": [
            {
                "name": "agent",
                "expression": f"namespaceObject.metadata.labels[{json.dumps(AGENT_LABEL)}]",
            },
            {
                "name": "hasWallet",
                "expression": "has(object.metadata.annotations) && "
                f"{ann} in object.metadata.annotations",
            },
            {
                "name": "wallet",
                "expression": f"variables.hasWallet ? object.metadata.annotations[{ann}] : ''",
            },
            {
                # On UPDATE only a change of the annotation is judged, so that a pod stored
                # before its namespace became an agent's can still be bound and updated.
                "name": "walletChanged",
                "expression": "request.operation == 'CREATE' || "
                "!has(oldObject.metadata.annotations) || "
                f"!({ann} in oldObject.metadata.annotations) || "
                f"oldObject.metadata.annotations[{ann}] != variables.wallet",
            },
        ],
        "validations": [
            {
                "expression": "request.operation != 'CREATE' || "
                "!has(object.spec.nodeName) || object.spec.nodeName == ''",
                "messageExpression": f"'spec.nodeName: {agent_of} are placed by the allocator\\'s "
                "auction, not by the agent'",
                "reason": "Forbidden",
            },
            {
                "expression": "request.operation != 'CREATE' || "
                f"(has(object.spec.schedulerName) && object.spec.schedulerName == {sched})",
                "messageExpression": f"'spec.schedulerName: {agent_of} must name the "
                f"allocator\\'s scheduler ' + {json.dumps(repr(scheduler_name))} + ', not ' + "
                "(has(object.spec.schedulerName) ? '\\'' + object.spec.schedulerName + '\\'' "
                ": 'none')",
                "reason": "Forbidden",
            },
            {
                "expression": "!variables.hasWallet || variables.wallet == variables.agent || "
                "!variables.walletChanged",
                "messageExpression": f"'metadata.annotations[{ANNOTATION_WALLET}]: {agent_of} "
                "pay from their own Wallet \\'' + variables.agent + '\\' only, not \\'' + "
                "variables.wallet + '\\''",
                "reason": "Forbidden",
            },
        ],
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    annotations = {ANNOTATION_SPEC_DIGEST: digest, ANNOTATION_SCHEDULER: scheduler_name}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": dict(MANAGED_BY), "annotations": annotations},
        "spec": spec,
    }
    binding_spec = {
        "policyName": POLICY_NAME,
        "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": selector},
    }
    binding_digest = hashlib.sha256(json.dumps(binding_spec, sort_keys=True).encode())
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {
            "name": POLICY_NAME,
            "labels": dict(MANAGED_BY),
            "annotations": {ANNOTATION_SPEC_DIGEST: binding_digest.hexdigest()[:16]},
        },
        "spec": binding_spec,
    }
    return [policy, binding]


class AgentError(RuntimeError):
    """An API call of ``agent create | delete`` failed; ``created`` lists what was written
    before it (``kind namespace/name``)."""

    def __init__(self, message: str, created: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.created = list(created)


@dataclass
class CreateReport:
    """What :func:`create_agent` did: the objects it created and those that were there already
    (``kind namespace/name``), and what became of the admission policy (``created``,
    ``unchanged`` or ``updated (...)``)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    admission: str = ""


_PLURAL = {
    "Namespace": "namespaces",
    "Pod": "pods",
    "Secret": "secrets",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Wallet": "wallets",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


def _path(
    api_version: str, kind: str, namespace: str | None = None, name: str | None = None
) -> str:
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += "/" + _PLURAL[kind]
    return path + (f"/{name}" if name is not None else "")


def _rest(
    api: Any,
    method: str,
    path: str,
    body: Any = None,
    query: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One call to the API server with a JSON body; the answer as JSON (ApiException on an error
    status). ``api`` is a ``kubernetes.client.ApiClient``; its own serializer adds the server,
    the credentials and the query string."""
    request = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    answer = api.call_api(*request)
    answer.read()
    if not 200 <= answer.status <= 299:
        raise ApiException.from_response(http_resp=answer, body=None, data=None)
    result: dict[str, Any] = json.loads(answer.data) if answer.data else {}
    return result


def _label(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


def _why(e: ApiException) -> str:
    """The API server's message of an error answer (its status line when there is none)."""
    try:
        message = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{e.status} {e.reason}" + (f": {message}" if message else "")


def _get(api: Any, path: str) -> dict[str, Any] | None:
    """The object at ``path``, or None if there is none (404)."""
    try:
        return _rest(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _namespace_of_agent(api: Any, name: str) -> dict[str, Any] | None:
    return _get(api, _path("v1", "Namespace", name=agent_namespace(name)))


def create_agent(
    api: Any, spec: AgentSpec, *, exist_ok: bool = False, admission_timeout: float = 30.0
) -> CreateReport:
    """Make agent ``spec.name``'s host side (see the module docstring).

    Reads first and writes nothing on a refusal: a namespace ``vc-NAME`` that is not this
    agent's, or is being deleted, or (without ``exist_ok``) an agent that exists, raise
    ProblemError naming ``name``. With ``exist_ok`` what exists is kept as it is (a Wallet is
    never reset) and what is missing is created. The admission policy is created, or updated
    when it was written for another scheduler name (it is one for all agents). The syncer's
    Role is bound only after the policy is seen enforced in ``vc-NAME`` (up to
    ``admission_timeout`` seconds, see :func:`wait_for_admission`). A write that fails raises
    AgentError listing what was created."""
    name = spec.name
    ns = agent_namespace(name)
    existing_ns = _namespace_of_agent(api, name)
    if existing_ns is not None:
        meta = existing_ns.get("metadata") or {}
        if (meta.get("labels") or {}).get(AGENT_LABEL) != name:
            raise ProblemError(
                "name",
                f"namespace {ns} exists and is not agent {name}'s (no label "
                f"{AGENT_LABEL}={name}); nothing created",
            )
        if meta.get("deletionTimestamp"):
            raise ProblemError(
                "name", f"agent {name} is being deleted (namespace {ns}); try again once it is gone"
            )
        if not exist_ok:
            raise ProblemError(
                "name",
                f"agent {name} exists (namespace {ns}); nothing created (--exist-ok creates "
                "only what is missing)",
            )
    policy, binding = admission_objects(spec.scheduler_name)
    report = CreateReport()
    done = report.created

    def create(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            _rest(api, "POST", _path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj)
            done.append(_label(obj))
        except ApiException as e:
            if e.status == 409 and (exist_ok or obj["kind"] != "Namespace"):
                report.existing.append(_label(obj))
                return
            if e.status == 409:  # created by someone else since the read above
                raise ProblemError("name", f"agent {name} exists (namespace {ns})") from None
            raise AgentError(f"creating {_label(obj)} failed: {_why(e)}", done) from None

    try:
        report.admission = _ensure_admission(api, policy, binding, done)
    except ApiException as e:
        raise AgentError(f"writing the admission policy failed: {_why(e)}", done) from None
    objects = agent_objects(spec)
    for obj in objects[:5]:  # namespace, Wallet, Service, both ServiceAccounts
        create(obj)
    try:
        enforced = wait_for_admission(api, name, spec.scheduler_name, admission_timeout)
    except ApiException as e:
        raise AgentError(f"probing the admission policy in {ns} failed: {_why(e)}", done) from None
    if not enforced:
        raise AgentError(
            f"admission policy {POLICY_NAME} not enforced in {ns} after {admission_timeout:g} s; "
            "the syncer was given no rights (run again with --exist-ok)",
            done,
        )
    for obj in objects[5:]:
        create(obj)
    return report


def _digest(obj: Mapping[str, Any]) -> str | None:
    """The digest of the spec ``obj`` was written with (its annotation)."""
    digest = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_DIGEST)
    return None if digest is None else str(digest)


def _ensure_admission(
    api: Any, policy: dict[str, Any], binding: dict[str, Any], done: list[str]
) -> str:
    """Create the policy and its binding, or bring them to ``policy`` and ``binding``; what
    became of the policy."""
    outcome = "unchanged"
    old = _get(api, _path(policy["apiVersion"], policy["kind"], name=POLICY_NAME))
    want = policy["metadata"]["annotations"]
    if old is None:
        _rest(api, "POST", _path(policy["apiVersion"], policy["kind"]), policy)
        done.append(_label(policy))
        outcome = "created"
    else:
        had = old["metadata"].get("annotations") or {}
        if _digest(old) != _digest(policy):
            body = {**policy, "metadata": {**policy["metadata"]}}
            body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            _rest(api, "PUT", _path(policy["apiVersion"], policy["kind"], name=POLICY_NAME), body)
            outcome = (
                f"updated (scheduler {had.get(ANNOTATION_SCHEDULER)!r} -> "
                f"{want[ANNOTATION_SCHEDULER]!r}; it applies to every agent)"
            )
    old_binding = _get(api, _path(binding["apiVersion"], binding["kind"], name=POLICY_NAME))
    if old_binding is None:
        _rest(api, "POST", _path(binding["apiVersion"], binding["kind"]), binding)
        done.append(_label(binding))
    elif _digest(old_binding) != _digest(binding):
        body = {**binding, "metadata": {**binding["metadata"]}}
        body["metadata"]["resourceVersion"] = old_binding["metadata"]["resourceVersion"]
        _rest(api, "PUT", _path(binding["apiVersion"], binding["kind"], name=POLICY_NAME), body)
    return outcome


def wait_for_admission(api: Any, name: str, scheduler_name: str, timeout: float) -> bool:
    """True once the admission policy, as written for ``scheduler_name``, is seen refusing a pod
    in agent ``name``'s namespace; False if not within ``timeout`` seconds.

    A ValidatingAdmissionPolicy takes effect a moment after it is written: each API server
    loads it (and its binding) through an informer and compiles its expressions. So the policy
    is probed, not waited for by sleeping: a server-side dry run (nothing is stored) creates a
    pod naming another scheduler, every 0.2 s, until it is refused with this policy's message
    naming ``scheduler_name`` (which also proves the current version is loaded). Behind several
    API servers this shows one of them; each loads it within about a second."""
    ns = agent_namespace(name)
    probe_scheduler = _PROBE_POD if scheduler_name != _PROBE_POD else _PROBE_POD + "-x"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": _PROBE_POD, "namespace": ns},
        "spec": {
            "schedulerName": probe_scheduler,
            "serviceAccountName": workload_account(name),
            "automountServiceAccountToken": False,
            "containers": [{"name": "probe", "image": "registry.invalid/gpualloc-probe"}],
        },
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            _rest(api, "POST", _path("v1", "Pod", ns), pod, {"dryRun": "All"})
        except ApiException as e:
            text = _why(e)
            if POLICY_NAME not in text or repr(scheduler_name) not in text:
                raise
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@dataclass
class DeleteReport:
    """What :func:`delete_agent` did: the namespace it deleted, and whether it was seen gone
    (only when asked to wait)."""

    namespace: str
    gone: bool = False


def delete_agent(
    api: Any, name: str, *, wait: bool = False, timeout: float = 120.0
) -> DeleteReport:
    """Delete agent ``name``: its namespace ``vc-NAME``, and with it (the namespace controller's
    work) its Wallet, ServiceAccounts, Roles, Service and pods. A name that is not an agent's
    (no namespace, or one without the label ``gpualloc.io/agent=NAME``) raises ProblemError and
    deletes nothing; the deletion is conditional on the namespace checked (its uid). With
    ``wait``, polls until the namespace is gone, up to ``timeout`` seconds. The cluster-wide
    admission policy stays (other agents use it; with none left it matches nothing)."""
    try:
        check_agent_name(name)
    except ValueError as e:
        raise ProblemError("name", str(e)) from None
    ns = agent_namespace(name)
    found = _namespace_of_agent(api, name)
    if found is None:
        raise ProblemError("name", f"no agent {name}: namespace {ns} does not exist")
    meta = found.get("metadata") or {}
    if (meta.get("labels") or {}).get(AGENT_LABEL) != name:
        raise ProblemError(
            "name",
            f"namespace {ns} is not agent {name}'s (no label {AGENT_LABEL}={name}); "
            "nothing deleted",
        )
    options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": meta["uid"]},
        "propagationPolicy": "Background",
    }
    try:
        _rest(api, "DELETE", _path("v1", "Namespace", name=ns), options)
    except ApiException as e:
        if e.status != 404:
            raise AgentError(f"deleting namespace {ns} failed: {_why(e)}") from None
    report = DeleteReport(ns)
    if wait:
        deadline = time.monotonic() + timeout
        while True:
            now = _namespace_of_agent(api, name)
            if now is None or (now.get("metadata") or {}).get("uid") != meta["uid"]:
                report.gone = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return report


@dataclass
class AgentInfo:
    """One agent as ``agent list`` shows it. ``balance`` is the Wallet's ``spec.balance``,
    ``available`` what it may spend this round (the reader's arithmetic: balance, plus income
    for every period started, minus spent); both None with ``wallet_error`` when the Wallet is
    missing or malformed. ``pending``: pods not yet placed; ``running``: pods placed and not
    finished. ``kubeconfig``: whether vcluster has exported the agent's kubeconfig (Secret
    ``vc-NAME/vc-NAME``; None if it could not be read). ``deleting``: the namespace is being
    deleted."""

    name: str
    namespace: str
    wallet: str
    balance: float | None
    available: float | None
    priority: int | None
    pending: int
    running: int
    kubeconfig: bool | None
    deleting: bool = False
    wallet_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As ``agent list --json`` prints it."""
        return asdict(self)


def list_agents(api: Any, now: datetime | None = None) -> list[AgentInfo]:
    """Every agent (namespace labelled ``gpualloc.io/agent``), by name."""
    now = now or datetime.now(UTC)
    listed = _rest(api, "GET", _path("v1", "Namespace"), query={"labelSelector": AGENT_LABEL})
    agents = []
    for ns_obj in listed.get("items") or []:
        meta = ns_obj["metadata"]
        ns = meta["name"]
        name = str((meta.get("labels") or {}).get(AGENT_LABEL))
        balance, available, priority, error = _agent_wallet(api, ns, name, now)
        pending, running = _agent_pods(api, ns)
        agents.append(
            AgentInfo(
                name=name,
                namespace=ns,
                wallet=f"{ns}/{name}",
                balance=balance,
                available=available,
                priority=priority,
                pending=pending,
                running=running,
                kubeconfig=_has_kubeconfig(api, ns, name),
                deleting=bool(meta.get("deletionTimestamp")),
                wallet_error=error,
            )
        )
    return sorted(agents, key=lambda a: (a.name, a.namespace))


def _agent_wallet(
    api: Any, ns: str, name: str, now: datetime
) -> tuple[float | None, float | None, int | None, str | None]:
    """An agent's Wallet: its ``spec.balance``, what it may spend now and its priority, or
    (None, None, None, why) when it is missing or malformed."""
    wallet = _get(api, _path(f"{WALLET_GROUP}/{WALLET_VERSION}", "Wallet", ns, name))
    if wallet is None:
        return None, None, None, f"no Wallet {ns}/{name}"
    try:
        available, priority = _wallet_balance(wallet, now)
        balance = float((wallet.get("spec") or {})["balance"])
    except (ValueError, KeyError, TypeError) as e:
        return None, None, None, str(e)
    return balance, available, priority, None


def _agent_pods(api: Any, ns: str) -> tuple[int, int]:
    """How many of the agent's pods are pending (not placed, not finished) and running."""
    pods = _rest(api, "GET", _path("v1", "Pod", ns)).get("items") or []
    finished = ("Succeeded", "Failed")
    pending = sum(
        1
        for p in pods
        if not (p.get("spec") or {}).get("nodeName")
        and (p.get("status") or {}).get("phase") not in finished
    )
    return pending, sum(1 for p in pods if _is_running(p))


def _has_kubeconfig(api: Any, ns: str, name: str) -> bool | None:
    """Whether vcluster has exported the agent's kubeconfig (None: not allowed to look)."""
    try:
        return _get(api, _path("v1", "Secret", ns, kubeconfig_secret(name))) is not None
    except ApiException as e:
        if e.status != 403:
            raise
        return None
