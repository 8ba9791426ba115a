"""`gpu-allocator agent create | delete | list` against the real API server: what an agent's host
side is made of, the syncer's rights (RBAC, asked of the authorizer and tried with a real token of
its ServiceAccount), the admission policy that keeps agents' pods honest, and refusals that write
nothing.

No vcluster syncer runs here: its identity is exercised with a token of the ServiceAccount it
would run as, making the calls it would make."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import (  # noqa: E402
    AuthorizationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.client.exceptions import ApiException  # noqa: E402

from allocator.cli import main  # noqa: E402
from allocator.cluster.agents import (  # noqa: E402
    ALLOCATOR_KUBECONFIG_ROLE,
    POLICY_NAME,
    SYNCER_RULES,
)
from allocator.cluster.api import apply_plan  # noqa: E402
from allocator.cluster.config import AGENT_LABEL  # noqa: E402
from allocator.cluster.plan import Binding, Plan  # noqa: E402

pytestmark = pytest.mark.k8s

GROUP, VERSION = "gpualloc.io", "v1alpha1"
ADMISSION = "admissionregistration.k8s.io/v1"
ENFORCED_TIMEOUT_S = 30.0


def _cli(*argv: str) -> tuple[int, str, str]:
    """Run the command line's entry point; exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def admin(api_client: Callable[[str], Any], control_plane: Any) -> Any:
    return api_client(control_plane.admin_token)


@pytest.fixture(scope="module")
def kubeconfig(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig for the administrator's token, as `--kubeconfig` takes it."""
    path = tmp_path_factory.mktemp("agents") / "admin.kubeconfig"
    return str(control_plane.write_kubeconfig(path, control_plane.admin_token))


def _new_name(prefix: str = "a") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


# Agents' namespaces this module made: their pods are removed at the end (other modules share
# the API server, and a pending pod of the scheduler gpu-allocator would be a bid in theirs).
_MADE: list[str] = []


def _create(kubeconfig: str, name: str, *extra: str) -> tuple[int, str, str]:
    _MADE.append(f"vc-{name}")
    return _cli("agent", "create", name, "--balance", "100", "--kubeconfig", kubeconfig, *extra)


@pytest.fixture(scope="module", autouse=True)
def _remove_pods(api_client: Callable[[str], Any], control_plane: Any) -> Iterator[None]:
    """At the end of the module, the pods left in the agents' namespaces are deleted at once."""
    yield
    core = CoreV1Api(api_client(control_plane.admin_token))
    for ns in _MADE:
        for pod in core.list_namespaced_pod(ns).items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)


@pytest.fixture(scope="module")
def agent(kubeconfig: str, gpualloc_crds: Any) -> str:
    """An agent made through the command line, as an operator would."""
    name = _new_name()
    rc, out, err = _create(kubeconfig, name, "--income", "5", "--period", "1h", "--priority", "7")
    assert rc == 0, out + err
    assert f"host namespace vc-{name}" in out and "enforced" in out
    return name


def _token_client(api_client: Callable[[str], Any], admin: Any, ns: str, account: str) -> Any:
    """An ApiClient with a real token of ServiceAccount ``ns/account`` (TokenRequest API)."""
    request = CoreV1Api(admin).create_namespaced_service_account_token(
        account, ns, {"spec": {"expirationSeconds": 600}}
    )
    return api_client(request.status.token)


@pytest.fixture(scope="module")
def syncer(api_client: Callable[[str], Any], admin: Any, agent: str) -> Any:
    """The agent's syncer as the host sees it: its ServiceAccount vc-NAME's token."""
    return _token_client(api_client, admin, f"vc-{agent}", f"vc-{agent}")


def _pod(
    name: str,
    *,
    scheduler: str | None = "gpu-allocator",
    node: str | None = None,
    wallet: str | None = None,
) -> dict[str, Any]:
    annotations = {"gpualloc.io/bid": "10"}
    if wallet is not None:
        annotations["gpualloc.io/wallet"] = wallet
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/none",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ]
    }
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec}


def _enforced(api: Any, ns: str) -> None:
    """Wait until the admission policy refuses a pod in ``ns``. A ValidatingAdmissionPolicy
    takes effect a moment after it is written (the API server loads it and its binding through
    informers and compiles it), so a test polls for it with a timeout instead of sleeping:
    a dry run (nothing stored) of a pod with a nodeName, until refused by this policy. With one
    API server, once refused, always refused: the checks after it cannot race."""
    core = CoreV1Api(api)
    deadline = time.monotonic() + ENFORCED_TIMEOUT_S
    while True:
        try:
            core.create_namespaced_pod(ns, _pod("probe", node="n"), dry_run="All")
        except ApiException as e:
            if POLICY_NAME in (e.body or ""):
                return
            raise
        assert time.monotonic() < deadline, f"{POLICY_NAME} not enforced in {ns}"
        time.sleep(0.2)


def _get(api: Any, path: str) -> dict[str, Any]:
    """GET ``path`` as JSON (for kinds without a typed call here)."""
    from allocator.cluster.agents import _rest

    return _rest(api, "GET", path)


def _message(e: ApiException) -> str:
    return str(json.loads(e.body).get("message"))


def _can(admin: Any, user: str, ns: str | None, verb: str, resource: str, **attrs: str) -> bool:
    """The authorizer's answer (SubjectAccessReview) for ``user``, a ServiceAccount."""
    sa_ns = user.split(":")[2]  # system:serviceaccount:NAMESPACE:NAME
    attributes = {"verb": verb, "resource": resource, **attrs}
    if ns is not None:
        attributes["namespace"] = ns
    review = AuthorizationV1Api(admin).create_subject_access_review(
        {
            "spec": {
                "user": user,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{sa_ns}",
                    "system:authenticated",
                ],
                "resourceAttributes": attributes,
            }
        }
    )
    return bool(review.status.allowed)


def test_create_makes_the_host_side(admin: Any, agent: str) -> None:
    """`agent create` makes the labelled namespace, the labelled Wallet with the options' values,
    the two ServiceAccounts, the Service NAME, the syncer's Role (exactly SYNCER_RULES) and the
    allocator's one-Secret Role, and the cluster-wide policy and binding."""
    ns = f"vc-{agent}"
    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    assert core.read_namespace(ns).metadata.labels[AGENT_LABEL] == agent
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, ns, "wallets", agent
    )
    assert wallet["spec"] == {"balance": 100, "incomePerPeriod": 5, "period": "1h", "priority": 7}
    assert wallet["metadata"]["labels"][AGENT_LABEL] == agent
    assert core.read_namespaced_service_account(f"vc-{agent}", ns)
    assert core.read_namespaced_service_account(f"vc-workload-{agent}", ns)
    service = core.read_namespaced_service(agent, ns)
    assert service.spec.type == "ClusterIP" and service.spec.cluster_ip
    assert {(p.name, p.port, p.target_port) for p in service.spec.ports} == {
        ("https", 443, 8443),
        ("kubelet", 10250, 8443),
    }
    role = admin.sanitize_for_serialization(rbac.read_namespaced_role(f"vc-{agent}", ns))
    assert role["rules"] == [rule for rule, _ in SYNCER_RULES]
    binding = rbac.read_namespaced_role_binding(f"vc-{agent}", ns)
    assert [(s.kind, s.namespace, s.name) for s in binding.subjects] == [
        ("ServiceAccount", ns, f"vc-{agent}")
    ]
    reader = admin.sanitize_for_serialization(
        rbac.read_namespaced_role(ALLOCATOR_KUBECONFIG_ROLE, ns)
    )
    assert reader["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"vc-{agent}"],
            "verbs": ["get"],
        }
    ]
    reader_binding = rbac.read_namespaced_role_binding(ALLOCATOR_KUBECONFIG_ROLE, ns)
    assert [(s.namespace, s.name) for s in reader_binding.subjects] == [
        ("gpu-allocator", "gpu-allocator")
    ]
    vap = _get(admin, f"/apis/{ADMISSION}/validatingadmissionpolicybindings/{POLICY_NAME}")
    selector = vap["spec"]["matchResources"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": AGENT_LABEL, "operator": "Exists"}]}


def test_syncer_rights_are_its_namespace_and_no_more(admin: Any, agent: str) -> None:
    """The authorizer lets the syncer's ServiceAccount sync pods, services, configmaps, secrets
    and events in vc-NAME, and refuses binding, eviction, Wallets, AllocationRounds, other
    namespaces, PVCs, ServiceAccounts, RBAC and everything cluster-wide."""
    ns = f"vc-{agent}"
    user = f"system:serviceaccount:{ns}:vc-{agent}"
    for verb, resource, attrs in [
        ("create", "pods", {}),
        ("delete", "pods", {}),
        ("watch", "pods", {}),
        ("patch", "pods", {"subresource": "status"}),
        ("get", "pods", {"subresource": "log"}),
        ("create", "pods", {"subresource": "exec"}),
        ("create", "services", {}),
        ("update", "services", {}),
        ("create", "configmaps", {}),
        ("create", "secrets", {}),
        ("get", "secrets", {"name": f"vc-config-{agent}"}),
        ("list", "endpoints", {}),
        ("list", "events", {}),
        ("create", "events", {}),
    ]:
        assert _can(admin, user, ns, verb, resource, **attrs), (verb, resource, attrs)
    for where, verb, resource, attrs in [
        (ns, "create", "pods", {"subresource": "binding"}),
        (ns, "create", "pods", {"subresource": "eviction"}),
        (ns, "get", "wallets", {"group": GROUP}),
        (ns, "list", "wallets", {"group": GROUP}),
        (ns, "update", "wallets", {"group": GROUP, "subresource": "status"}),
        (ns, "create", "allocationrounds", {"group": GROUP}),
        (ns, "create", "endpoints", {}),
        (ns, "create", "persistentvolumeclaims", {}),
        (ns, "create", "serviceaccounts", {}),
        (ns, "create", "serviceaccounts", {"subresource": "token", "name": f"vc-{agent}"}),
        (ns, "create", "rolebindings", {"group": "rbac.authorization.k8s.io"}),
        (ns, "update", "roles", {"group": "rbac.authorization.k8s.io"}),
        (ns, "list", "statefulsets", {"group": "apps"}),
        (ns, "create", "endpointslices", {"group": "discovery.k8s.io"}),
        ("default", "create", "pods", {}),
        ("default", "get", "secrets", {}),
        ("kube-system", "list", "pods", {}),
        (None, "list", "pods", {}),
        (None, "list", "nodes", {}),
        (None, "get", "namespaces", {"name": ns}),
        (None, "update", "namespaces", {"name": ns}),
        (None, "create", "validatingadmissionpolicies", {"group": "admissionregistration.k8s.io"}),
    ]:
        assert not _can(admin, user, where, verb, resource, **attrs), (where, verb, resource)


def test_syncer_token_is_refused_for_real(admin: Any, agent: str, syncer: Any) -> None:
    """With a real token of the syncer's ServiceAccount, creating a correct pod in vc-NAME works,
    and binding it, evicting it, reading the agent's Wallet, creating a pod elsewhere and listing
    nodes are refused by the API server (403)."""
    ns = f"vc-{agent}"
    core = CoreV1Api(syncer)
    _enforced(admin, ns)
    core.create_namespaced_pod(ns, _pod("synced-0", wallet=agent))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "synced-0"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "anywhere"},
    }
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "synced-0"}}
    for call in (
        lambda: core.create_namespaced_pod_binding("synced-0", ns, binding),
        lambda: core.create_namespaced_pod_eviction("synced-0", ns, eviction),
        lambda: CustomObjectsApi(syncer).get_namespaced_custom_object(
            GROUP, VERSION, ns, "wallets", agent
        ),
        lambda: core.create_namespaced_pod("default", _pod(_new_name("p"))),
        lambda: core.list_node(),
    ):
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403
    assert CoreV1Api(admin).read_namespaced_pod("synced-0", ns).spec.node_name is None
    core.delete_namespaced_pod("synced-0", ns, grace_period_seconds=0)


def test_allocator_reads_the_exported_kubeconfig_and_no_other_secret(
    admin: Any, agent: str
) -> None:
    """The allocator's ServiceAccount (the chart's default) may get Secret vc-NAME/vc-NAME by
    name, and no other Secret there or elsewhere, nor list them."""
    ns = f"vc-{agent}"
    user = "system:serviceaccount:gpu-allocator:gpu-allocator"
    assert _can(admin, user, ns, "get", "secrets", name=f"vc-{agent}")
    assert not _can(admin, user, ns, "get", "secrets", name=f"vc-config-{agent}")
    assert not _can(admin, user, ns, "list", "secrets")
    assert not _can(admin, user, ns, "watch", "secrets")
    assert not _can(admin, user, ns, "update", "secrets", name=f"vc-{agent}")
    assert not _can(admin, user, "default", "get", "secrets", name=f"vc-{agent}")


@pytest.mark.parametrize("who", ["syncer", "admin"])
@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("node", "spec.nodeName"),
        ("scheduler", "spec.schedulerName"),
        ("no-scheduler", "spec.schedulerName"),
        ("wallet", "metadata.annotations[gpualloc.io/wallet]"),
    ],
)
def test_admission_refuses_a_dishonest_pod(
    admin: Any, agent: str, syncer: Any, who: str, case: str, field: str
) -> None:
    """A pod in vc-NAME with a nodeName, another scheduler (or none: the default one), or
    naming another Wallet is refused at creation, for the syncer and an administrator alike,
    with a message naming the field and the agent."""
    ns = f"vc-{agent}"
    _enforced(admin, ns)
    name = _new_name("p")
    pod = {
        "node": _pod(name, node="gpu-somewhere", wallet=agent),
        "scheduler": _pod(name, scheduler="default-scheduler"),
        "no-scheduler": _pod(name, scheduler=None),
        "wallet": _pod(name, wallet="someone-else"),
    }[case]
    api = syncer if who == "syncer" else admin
    with pytest.raises(ApiException) as refused:
        CoreV1Api(api).create_namespaced_pod(ns, pod)
    message = _message(refused.value)
    assert refused.value.status == 403, message
    assert POLICY_NAME in message and f"{field}: pods of agent {agent}" in message
    with pytest.raises(ApiException) as gone:
        CoreV1Api(admin).read_namespaced_pod(name, ns)
    assert gone.value.status == 404


def test_admission_lets_the_allocator_bind_and_the_syncer_update(
    admin: Any, agent: str, syncer: Any, gpu_world: Any
) -> None:
    """A correct pod from the syncer is admitted; the allocator's own bind (apply_plan: the
    gpus/round annotations, then the Binding subresource) goes through; afterwards the kubelet's
    status updates (kwok's: the node is a kwok node, which starts the pod) and the syncer's and
    a label change are admitted, while changing the Wallet annotation (through the pod or its
    status) is refused."""
    ns = f"vc-{agent}"
    _enforced(admin, ns)
    core, sync_core = CoreV1Api(admin), CoreV1Api(syncer)
    sync_core.create_namespaced_pod(ns, _pod("honest", wallet=agent))
    sync_core.create_namespaced_pod(ns, _pod("no-wallet"))  # the reader fills in the agent's
    node = gpu_world.node(admin, 1)
    report = apply_plan(admin, Plan("r-agents", bindings=(Binding(f"{ns}/honest", node, (0,)),)))
    assert report.problems == [] and report.bound == 1
    bound = core.read_namespaced_pod("honest", ns)
    assert bound.spec.node_name == node
    assert bound.metadata.annotations["gpualloc.io/gpus"] == "0"
    assert bound.metadata.annotations["gpualloc.io/round"] == "r-agents"
    gpu_world.running(core, ns, "honest")  # the kubelet's status updates were admitted
    condition = {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}
    sync_core.patch_namespaced_pod_status("honest", ns, {"status": {"conditions": [condition]}})
    sync_core.patch_namespaced_pod("honest", ns, {"metadata": {"labels": {"team": "a"}}})
    other = {"metadata": {"annotations": {"gpualloc.io/wallet": "someone-else"}}}
    for call in (
        lambda: sync_core.patch_namespaced_pod("honest", ns, other),
        lambda: sync_core.patch_namespaced_pod_status("honest", ns, other),
        lambda: sync_core.patch_namespaced_pod("no-wallet", ns, other),
    ):
        with pytest.raises(ApiException) as refused:
            call()
        assert "metadata.annotations[gpualloc.io/wallet]" in _message(refused.value)
    after = core.read_namespaced_pod("honest", ns)
    assert after.metadata.annotations["gpualloc.io/wallet"] == agent
    assert after.metadata.labels == {"team": "a"} and after.status.phase == "Running"
    core.delete_node(node)


def test_the_host_statefulset_controller_is_not_checked(
    api_client: Callable[[str], Any], control_plane: Any, admin: Any, agent: str
) -> None:
    """Pods the host's StatefulSet controller creates in vc-NAME (vcluster's own pod, installed
    with its chart) are not held to the agents' rules; the same pod from anyone else is."""
    ns = f"vc-{agent}"
    _enforced(admin, ns)
    controller = api_client(control_plane.admin_token)
    controller.set_default_header(
        "Impersonate-User", "system:serviceaccount:kube-system:statefulset-controller"
    )
    pod = _pod("vcluster-0", scheduler="default-scheduler")
    CoreV1Api(controller).create_namespaced_pod(ns, pod, dry_run="All")
    with pytest.raises(ApiException):
        CoreV1Api(admin).create_namespaced_pod(ns, pod, dry_run="All")


def _listed(kubeconfig: str, name: str) -> dict[str, Any] | None:
    rc, out, err = _cli("agent", "list", "--json", "--kubeconfig", kubeconfig)
    assert rc == 0, err
    found = [a for a in json.loads(out) if a["name"] == name]
    return found[0] if found else None


def test_list_shows_wallet_pods_and_kubeconfig(
    admin: Any, kubeconfig: str, gpualloc_crds: Any, gpu_world: Any
) -> None:
    """`agent list --json` shows the agent's namespace, Wallet balance and what it may spend,
    priority, its pods pending and running, and whether vcluster exported its kubeconfig; the
    table shows the same."""
    name = _new_name("l")
    ns = f"vc-{name}"
    rc, out, err = _create(kubeconfig, name, "--priority", "3")
    assert rc == 0, out + err
    core = CoreV1Api(admin)
    core.create_namespaced_pod(ns, _pod("waiting", wallet=name))
    core.create_namespaced_pod(ns, _pod("placed", wallet=name))
    node = gpu_world.node(admin, 1)
    core.create_namespaced_pod_binding(
        "placed",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "placed"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
        _preload_content=False,  # the answer is a Status, which the typed model cannot read
    ).read()
    gpu_world.running(core, ns, "placed")  # the node's kubelet (kwok) starts it
    shown = _listed(kubeconfig, name)
    assert shown == {
        "name": name,
        "namespace": ns,
        "wallet": f"{ns}/{name}",
        "balance": 100.0,
        "available": 100.0,
        "priority": 3,
        "pending": 1,
        "running": 1,
        "kubeconfig": False,
        "deleting": False,
        "wallet_error": None,
    }
    core.create_namespaced_secret(ns, {"metadata": {"name": ns}, "stringData": {"config": "x"}})
    assert (_listed(kubeconfig, name) or {})["kubeconfig"] is True
    rc, out, _ = _cli("agent", "list", "--kubeconfig", kubeconfig)
    line = next(row for row in out.splitlines() if row.startswith(name + " "))
    assert line.split()[1:] == [ns, "100.00", "100.00", "3", "1", "1", "yes", "ok"]
    core.delete_node(node)


def _namespaces(admin: Any) -> set[str]:
    return {n.metadata.name for n in CoreV1Api(admin).list_namespace().items}


@pytest.mark.parametrize("bad", ["Alice", "-alice", "alice-", "1alice", "a_b", "a.b", "", "a" * 41])
def test_bad_names_exit_2_and_write_nothing(
    admin: Any, kubeconfig: str, gpualloc_crds: Any, bad: str
) -> None:
    """A name that is not a DNS-1123 label of <= 40 characters starting with a letter is refused
    naming NAME (exit 2), by create and by delete, and no namespace appears or goes."""
    before = _namespaces(admin)
    for verb in ("create", "delete"):
        options = ["--kubeconfig", kubeconfig, *(["--balance", "1"] if verb == "create" else [])]
        rc, out, err = _cli("agent", verb, *options, "--", bad)  # "--": "-alice" is a name
        assert rc == 2 and err.startswith("error: NAME: "), (verb, out, err)
    assert _namespaces(admin) == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--balance", "-1"], "--balance"),
        (["--balance", "nan"], "--balance"),
        (["--balance", "1", "--income", "1e13"], "--income"),
        (["--balance", "1", "--period", "daily"], "--period"),
        (["--balance", "1", "--period", "0s"], "--period"),
        (["--balance", "1", "--priority", "5000"], "--priority"),
        (["--balance", "1", "--scheduler-name", "Not_A_Name"], "--scheduler-name"),
        (["--balance", "1", "--allocator-serviceaccount", "nope"], "--allocator-serviceaccount"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    admin: Any, kubeconfig: str, gpualloc_crds: Any, args: list[str], option: str
) -> None:
    """A bad Wallet value or option is refused naming the option (exit 2) before any write: no
    namespace, and the admission policy untouched."""
    name = _new_name("b")
    before = _namespaces(admin)
    rc, out, err = _cli("agent", "create", name, "--kubeconfig", kubeconfig, *args)
    assert rc == 2 and err.startswith(f"error: {option}: "), out + err
    assert _namespaces(admin) == before


def test_create_twice_exits_2_unless_exist_ok(admin: Any, kubeconfig: str, agent: str) -> None:
    """Creating an existing agent is refused naming it (exit 2, nothing changed); with
    --exist-ok it succeeds, creates nothing new and keeps the Wallet as it was."""
    rc, out, err = _create(kubeconfig, agent)
    assert rc == 2 and f"agent {agent} exists" in err, out + err
    rc, out, err = _create(kubeconfig, agent, "--exist-ok", "--priority", "9")
    assert rc == 0, out + err
    assert "created:" not in out and f"Wallet vc-{agent}/{agent}" in out
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, f"vc-{agent}", "wallets", agent
    )
    assert wallet["spec"]["priority"] == 7 and wallet["spec"]["incomePerPeriod"] == 5


def test_create_refuses_a_namespace_that_is_not_the_agents(
    admin: Any, kubeconfig: str, gpualloc_crds: Any
) -> None:
    """An existing namespace vc-NAME without the agent label is refused (exit 2) even with
    --exist-ok: it gets no label, no Wallet, no ServiceAccount."""
    name = _new_name("f")
    ns = f"vc-{name}"
    core = CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": ns}})
    for extra in ((), ("--exist-ok",)):
        rc, out, err = _create(kubeconfig, name, *extra)
        assert rc == 2 and f"namespace {ns} exists and is not agent {name}'s" in err, out + err
    assert not (core.read_namespace(ns).metadata.labels or {}).get(AGENT_LABEL)
    assert core.list_namespaced_service_account(ns).items == []
    wallets = CustomObjectsApi(admin).list_namespaced_custom_object(GROUP, VERSION, ns, "wallets")
    assert wallets["items"] == []


def test_delete_refuses_what_is_not_an_agent(
    admin: Any, kubeconfig: str, gpualloc_crds: Any
) -> None:
    """Deleting a name with no namespace, or whose namespace lacks the label or names another
    agent, exits 2 and deletes nothing."""
    core = CoreV1Api(admin)
    plain, other = _new_name("n"), _new_name("o")
    core.create_namespace({"metadata": {"name": f"vc-{plain}"}})
    core.create_namespace({"metadata": {"name": f"vc-{other}", "labels": {AGENT_LABEL: "x"}}})
    rc, _, err = _cli("agent", "delete", _new_name("z"), "--kubeconfig", kubeconfig)
    assert rc == 2 and "does not exist" in err
    for name in (plain, other):
        rc, _, err = _cli("agent", "delete", name, "--kubeconfig", kubeconfig)
        assert rc == 2 and f"namespace vc-{name} is not agent {name}'s" in err, err
        assert core.read_namespace(f"vc-{name}").metadata.deletion_timestamp is None


def _finalize_when_deleted(admin: Any, ns: str, stop: threading.Event) -> None:
    """Stands in for the namespace controller (no kube-controller-manager runs here): once
    ``ns`` is being deleted, removes its finalizer, which lets the API server remove it. (The
    controller would first delete what is in it; here its objects stay in storage, unseen.)"""
    core = CoreV1Api(admin)
    while not stop.wait(0.1):
        found = core.read_namespace(ns)
        if found.metadata.deletion_timestamp is not None:
            body = admin.sanitize_for_serialization(found)
            body["spec"]["finalizers"] = []
            core.replace_namespace_finalize(ns, body)
            return


def test_delete_removes_the_agent(admin: Any, kubeconfig: str, gpualloc_crds: Any) -> None:
    """`agent delete` deletes the agent's namespace: list shows it deleting, create is refused
    meanwhile; with --wait it returns once the namespace is gone (exit 0, and list no longer
    shows it) or says it is still there after --timeout (exit 1)."""
    first, second = _new_name("d"), _new_name("e")
    for name in (first, second):
        rc, out, err = _create(kubeconfig, name)
        assert rc == 0, out + err
    rc, out, err = _cli("agent", "delete", first, "--kubeconfig", kubeconfig)
    assert rc == 0 and f"deleting namespace vc-{first}" in out, out + err
    assert CoreV1Api(admin).read_namespace(f"vc-{first}").metadata.deletion_timestamp
    assert (_listed(kubeconfig, first) or {})["deleting"] is True
    rc, _, err = _create(kubeconfig, first)
    assert rc == 2 and "is being deleted" in err
    # Nothing finalizes it here: --wait gives up after its timeout.
    rc, _, err = _cli(
        "agent", "delete", second, "--wait", "--timeout", "1", "--kubeconfig", kubeconfig
    )
    assert rc == 1 and "still there after 1 s" in err
    # With the namespace controller's stand-in, --wait sees it gone.
    third = _new_name("g")
    rc, out, err = _create(kubeconfig, third)
    assert rc == 0, out + err
    stop = threading.Event()
    stand_in = threading.Thread(
        target=_finalize_when_deleted, args=(admin, f"vc-{third}", stop), daemon=True
    )
    stand_in.start()
    try:
        rc, out, err = _cli(
            "agent", "delete", third, "--wait", "--timeout", "30", "--kubeconfig", kubeconfig
        )
    finally:
        stop.set()
        stand_in.join(timeout=10)
    assert rc == 0 and f"namespace vc-{third} is gone" in out, out + err
    assert _listed(kubeconfig, third) is None
    assert f"vc-{third}" not in _namespaces(admin)


@pytest.fixture()
def maker(
    api_client: Callable[[str], Any], admin: Any, control_plane: Any, tmp_path: Path
) -> Iterator[str]:
    """A kubeconfig for an identity that may do everything `agent create` does except create
    Roles: a write that fails midway."""
    ns = _new_name("maker-")
    name = "agent-maker"
    core, rbac = CoreV1Api(admin), RbacAuthorizationV1Api(admin)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    rules = [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
            "verbs": ["get", "create", "update"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]},
        {
            "apiGroups": [""],
            "resources": ["services", "serviceaccounts", "pods"],
            "verbs": ["create"],
        },
        {"apiGroups": [GROUP], "resources": ["wallets"], "verbs": ["create"]},
    ]
    role = f"{ns}-role"
    rbac.create_cluster_role({"metadata": {"name": role}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        }
    )
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    yield str(control_plane.write_kubeconfig(tmp_path / "maker.kubeconfig", token))
    rbac.delete_cluster_role_binding(role)
    rbac.delete_cluster_role(role)


def test_a_write_failing_midway_says_what_was_created(
    admin: Any, kubeconfig: str, maker: str, gpualloc_crds: Any
) -> None:
    """When a write is refused midway (here: creating the syncer's Role), the command exits 1
    naming the refused object and listing what it created, which `agent delete` removes; the
    syncer got no rights."""
    name = _new_name("m")
    ns = f"vc-{name}"
    rc, out, err = _create(maker, name)
    assert rc == 1, out + err
    assert f"creating Role {ns}/vc-{name} failed: 403" in err
    created = err.partition("created before the failure: ")[2]
    for what in (
        f"Namespace {ns}",
        f"Wallet {ns}/{name}",
        f"Service {ns}/{name}",
        f"ServiceAccount {ns}/vc-workload-{name}",
        f"ServiceAccount {ns}/vc-{name}",
    ):
        assert what in created, err
    assert f"agent delete {name}" in err
    assert RbacAuthorizationV1Api(admin).list_namespaced_role_binding(ns).items == []
    rc, out, err = _cli("agent", "delete", name, "--kubeconfig", kubeconfig)
    assert rc == 0, out + err
