"""The Helm chart (charts/gpu-allocator), rendered by the real `helm template` (scripts/build-helm)
and created object by object in the real API server; its ServiceAccount's token runs a round and
is refused everything else (least-privilege RBAC); the Deployment's own arguments run rounds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
import yaml  # noqa: E402
from fake_nvml import FakeNvml, h200  # noqa: E402  (tests/harness, on sys.path from conftest)
from kubernetes.client import (  # noqa: E402
    AuthorizationV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from allocator.cli import main  # noqa: E402
from allocator.cluster import ClusterConfig  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402
from allocator.cluster.options import RoundOptions  # noqa: E402
from allocator.solvers import SolveParams  # noqa: E402

pytestmark = pytest.mark.k8s

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpu-allocator"

# What one round reads and writes (allocator/cluster/api.py), as (apiGroup, resource, verbs).
EXPECTED_CLUSTER_RULES = {
    ("", "nodes", ("get", "list")),
    ("", "pods", ("get", "list", "patch")),
    ("", "pods/binding", ("create",)),
    ("", "pods/eviction", ("create",)),
    ("", "events", ("create", "get", "list", "patch")),
    ("gpualloc.io", "wallets", ("get", "list")),
    ("gpualloc.io", "wallets/status", ("update",)),
}


def _render(helm: Path, release: str, ns: str, *args: str) -> list[dict[str, Any]]:
    """`helm template` the chart; the rendered objects (empty documents dropped)."""
    out = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", ns, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rendered objects by kind (the chart renders at most one of each)."""
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def _create_all(admin: Any, docs: list[dict[str, Any]], ns: str) -> None:
    """Create every object for real (no dry run), each accepted by the API server."""
    dyn = DynamicClient(admin)
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        created = resource.create(body=doc, namespace=ns if resource.namespaced else None)
        assert created.metadata.name == doc["metadata"]["name"]
        assert created.metadata.uid


def _namespace(admin: Any, prefix: str) -> str:
    """A fresh namespace for one test."""
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    return ns


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    """The allocator's container in a CronJob or a Deployment, as the API server returns it."""
    spec = obj["spec"]
    pod = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    (container,) = pod["spec"]["containers"]
    return dict(container)


def _common_args(
    ns: str,
    lease: str,
    solver: str,
    limit: str,
    scheduler: str,
    threads: str = "1",
    packing: str = "fgd",
) -> list[str]:
    return [
        "--lease",
        f"{ns}/{lease}",
        "--solver",
        solver,
        "--payments",
        "auto",
        "--packing",
        packing,
        "--time-limit",
        limit,
        "--threads",
        threads,
        "--scheduler-name",
        scheduler,
    ]


def test_chart_lints_and_ships_the_crds(helm: Path) -> None:
    """`helm lint` passes; --include-crds emits the chart's two CRDs; the Deployment is off."""
    lint = subprocess.run([str(helm), "lint", str(CHART)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = _render(helm, "lint", "default", "--include-crds")
    crds = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition")
    shipped = sorted(
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in CHART.glob("crds/*.yaml")
    )
    assert crds == shipped and len(crds) == 2
    kinds = {d["kind"] for d in _render(helm, "lint", "default")}
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "CronJob",
    }


def test_cluster_role_is_least_privilege(helm: Path) -> None:
    """The ClusterRole grants exactly the verbs a round uses: no wildcard, no Secrets, no delete;
    the Role, in the release namespace, covers one Lease by name and the AllocationRounds (the
    only thing deleted: Applied rounds beyond --keep-rounds)."""
    objs = _by_kind(_render(helm, "rbac", "ops"))
    rules = objs["ClusterRole"]["rules"]
    got = {
        (g, r, tuple(sorted(x["verbs"])))
        for x in rules
        for g in x["apiGroups"]
        for r in x["resources"]
    }
    assert got == EXPECTED_CLUSTER_RULES
    text = yaml.safe_dump([objs["ClusterRole"], objs["Role"]])
    assert "*" not in text and "secrets" not in text
    assert "delete" not in yaml.safe_dump(objs["ClusterRole"])
    role = objs["Role"]
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["rbac-gpu-allocator"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["gpualloc.io"],
            "resources": ["allocationrounds"],
            "verbs": ["create", "list", "delete"],
        },
        {
            "apiGroups": ["gpualloc.io"],
            "resources": ["allocationrounds/status"],
            "verbs": ["patch"],
        },
    ]


def test_default_values_are_accepted_by_the_api_server(
    helm: Path, api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """Every object of the default render is created in a fresh namespace; the CronJob is
    Forbid, on the default schedule, running `run --once` with the default arguments."""
    admin = api_client(control_plane.admin_token)
    ns = _namespace(admin, "chart")
    release = f"d{uuid.uuid4().hex[:6]}"
    docs = _render(helm, release, ns)
    _create_all(admin, docs, ns)
    cron = admin.sanitize_for_serialization(
        kubernetes.client.BatchV1Api(admin).read_namespaced_cron_job(f"{release}-gpu-allocator", ns)
    )
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "*/1 * * * *"
    container = _container(cron)
    assert container["command"] == ["gpu-allocator"]
    lease = f"{release}-gpu-allocator"
    assert container["args"] == [
        "run",
        "--once",
        *_common_args(ns, lease, "auto", "10", "gpu-allocator"),
    ]
    pod_spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == f"{release}-gpu-allocator"
    assert pod_spec["restartPolicy"] == "Never"


def test_overrides_are_accepted_by_the_api_server(
    helm: Path, api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """Overridden values (schedule, solver, packing, time limit, scheduler name, image,
    resources, the optional Deployment) render objects the API server accepts, with the values
    in their args."""
    admin = api_client(control_plane.admin_token)
    ns = _namespace(admin, "chart")
    release = f"o{uuid.uuid4().hex[:6]}"
    docs = _render(
        helm,
        release,
        ns,
        "--set",
        "schedule=*/5 * * * *",
        "--set",
        "solver=greedy",
        "--set",
        "timeLimit=2.5",
        "--set",
        "threads=4",
        "--set",
        "packing=pattern",
        "--set",
        "schedulerName=team-gpu",
        "--set",
        "image.repository=registry.example/gpu-allocator,image.tag=test",
        "--set",
        "resources.requests.cpu=250m,resources.limits.memory=1Gi",
        "--set",
        "deployment.enabled=true,deployment.interval=30,deployment.terminationGracePeriodSeconds=90",
        "--set",
        "lease.name=the-lease",
    )
    assert {d["kind"] for d in docs} >= {"CronJob", "Deployment"}
    _create_all(admin, docs, ns)
    name = f"{release}-gpu-allocator"
    batch = kubernetes.client.BatchV1Api(admin)
    cron = admin.sanitize_for_serialization(batch.read_namespaced_cron_job(name, ns))
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    common = _common_args(
        ns, "the-lease", "greedy", "2.5", "team-gpu", threads="4", packing="pattern"
    )
    container = _container(cron)
    assert container["args"] == ["run", "--once", *common]
    assert container["image"] == "registry.example/gpu-allocator:test"
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    apps = kubernetes.client.AppsV1Api(admin)
    deployment = admin.sanitize_for_serialization(apps.read_namespaced_deployment(name, ns))
    assert deployment["spec"]["replicas"] == 1
    metrics = ["--metrics-port", "9090"]
    assert _container(deployment)["args"] == ["run", "--interval", "30", *metrics, *common]
    assert _container(deployment)["ports"] == [
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
    ]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_service_monitor_and_dashboard_render_and_are_accepted(
    helm: Path, api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """With the Deployment, the metrics port has a Service; the ServiceMonitor and the Grafana
    dashboard's ConfigMap render when asked (the dashboard as the chart's file), and the API
    server accepts the Service and the ConfigMap (this cluster has no Prometheus Operator)."""
    admin = api_client(control_plane.admin_token)
    ns = _namespace(admin, "chart-metrics")
    release = f"m{uuid.uuid4().hex[:6]}"
    assert "Service" not in {d["kind"] for d in _render(helm, release, ns)}  # no Deployment
    docs = _render(
        helm,
        release,
        ns,
        "--set",
        "deployment.enabled=true,cronJob.enabled=false,metrics.port=9300",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.dashboard.enabled=true",
    )
    kinds = _by_kind(docs)
    service, monitor, board = kinds["Service"], kinds["ServiceMonitor"], kinds["ConfigMap"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "gpu-allocator.json").read_text())
    assert json.loads(board["data"]["gpu-allocator.json"]) == shipped
    _create_all(admin, [d for d in docs if d["kind"] != "ServiceMonitor"], ns)


def _allowed(api: Any, ns: str | None, verb: str, resource: str, **attrs: str) -> bool:
    """The API server's answer to SelfSubjectAccessReview for the token behind ``api``."""
    spec = {"verb": verb, "resource": resource, **attrs}
    if ns is not None:
        spec["namespace"] = ns
    review = AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": spec}}
    )
    return bool(review.status.allowed)


def test_service_account_runs_a_round_and_nothing_more(
    helm: Path,
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token of the chart's ServiceAccount (TokenRequest API) runs one round for real under
    the Lease (pod bound, wallet charged, events written), and is refused Secrets, deleting a
    Node and every verb the chart does not grant."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = _namespace(admin, "chart-rbac")
    release = f"r{uuid.uuid4().hex[:6]}"
    _create_all(admin, _render(helm, release, ns), ns)
    sa_name = lease_name = f"{release}-gpu-allocator"

    # The workload, in a namespace of its own: one GPU node, a wallet, two pods wanting 3 of
    # its 4 GPUs.
    wns, node = gpu_world.cluster(admin, 4)
    gpu_world.pod(core, wns, "high", 3, "30")
    gpu_world.pod(core, wns, "low", 3, "12")
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})

    request = core.create_namespaced_service_account_token(
        sa_name, ns, {"spec": {"expirationSeconds": 600}}
    )
    sa = api_client(request.status.token)

    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(wns, node))
    # As `gpu-allocator run --once --lease NS/NAME` calls it: rounds recorded in the Lease's
    # namespace.
    out = run_once(
        sa,
        ClusterConfig(scheduler_name="gpu-allocator"),
        RoundOptions(
            solve=SolveParams(solver="greedy"),
            round_id="r-chart",
            lease=(ns, lease_name, "chart-test"),
            record_namespace=ns,
        ),
    )
    assert out.leader and out.report is not None
    assert out.report.problems == []
    assert out.report.bound == 1 and out.report.charged == 1 and out.report.events >= 2
    assert core.read_namespaced_pod("high", wns).spec.node_name == node
    assert core.read_namespaced_pod("low", wns).spec.node_name is None
    custom = CustomObjectsApi(admin)
    wallet = custom.get_namespaced_custom_object("gpualloc.io", "v1alpha1", wns, "wallets", "w")
    assert wallet["status"]["spent"] == pytest.approx(12.0)
    assert [e["round"] for e in wallet["status"]["ledger"]] == ["r-chart"]
    lease = CoordinationV1Api(admin).read_namespaced_lease(lease_name, ns)
    assert lease.spec.holder_identity is None  # taken for the round, released after it
    record = custom.get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "allocationrounds", "r-chart"
    )
    assert record["status"]["phase"] == "Applied" and record["status"]["winners"] == 1

    # Refused for real: Secrets (in any namespace, and its own) and deleting a Node.
    sa_core = CoreV1Api(sa)
    for call in (
        lambda: sa_core.list_secret_for_all_namespaces(),
        lambda: sa_core.list_namespaced_secret(ns),
        lambda: sa_core.read_namespaced_secret("s", ns),
        lambda: sa_core.delete_node(node),
    ):
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403
    assert core.read_node(node).metadata.name == node

    # Everything granted, as the authorizer sees it (evictions included, which the round above
    # had no reason to use), and a sample of what is not.
    other = "kube-system"
    for verb, resource, attrs in [
        ("list", "nodes", {}),
        ("list", "pods", {}),
        ("get", "pods", {}),
        ("patch", "pods", {}),
        ("create", "pods", {"subresource": "binding"}),
        ("create", "pods", {"subresource": "eviction"}),
        ("create", "events", {}),
        ("patch", "events", {}),
        ("list", "wallets", {"group": "gpualloc.io"}),
        ("get", "wallets", {"group": "gpualloc.io"}),
        ("update", "wallets", {"group": "gpualloc.io", "subresource": "status"}),
    ]:
        assert _allowed(sa, other, verb, resource, **attrs), (verb, resource, attrs)
    lease_attrs = {"group": "coordination.k8s.io", "name": lease_name}
    assert _allowed(sa, ns, "update", "leases", **lease_attrs)
    rounds = {"group": "gpualloc.io", "resource": "allocationrounds"}
    assert _allowed(sa, ns, "list", **rounds)
    assert _allowed(sa, ns, "patch", subresource="status", **rounds)
    for ns_, verb, resource, attrs in [
        (other, "get", "secrets", {}),
        (other, "list", "secrets", {}),
        (None, "delete", "nodes", {}),
        (None, "update", "nodes", {}),
        (other, "create", "pods", {}),
        (other, "delete", "pods", {}),
        (other, "update", "pods", {}),
        (other, "list", "configmaps", {}),
        (other, "update", "wallets", {"group": "gpualloc.io"}),
        (other, "delete", "wallets", {"group": "gpualloc.io"}),
        (other, "create", "wallets", {"group": "gpualloc.io"}),
        (other, "update", "leases", lease_attrs),
        (ns, "update", "leases", {"group": "coordination.k8s.io", "name": "another"}),
        (ns, "delete", "leases", lease_attrs),
        (other, "create", "allocationrounds", {"group": "gpualloc.io"}),
        (other, "delete", "allocationrounds", {"group": "gpualloc.io"}),
        (ns, "update", "allocationrounds", {"group": "gpualloc.io"}),
        (other, "create", "clusterroles", {"group": "rbac.authorization.k8s.io"}),
    ]:
        assert not _allowed(sa, ns_, verb, resource, **attrs), (ns_, verb, resource, attrs)


def test_deployment_mode_runs_rounds_with_its_service_account(
    helm: Path,
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With the Deployment on and the CronJob off, the Deployment's container arguments, as the
    API server stores them, run `gpu-allocator run --interval 1` with a token of the chart's
    ServiceAccount: two rounds (--max-rounds 2), the first binds and charges, the second has
    nothing new to write and is not recorded; exit 0 and the Lease left free."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = _namespace(admin, "chart-deploy")
    release = f"l{uuid.uuid4().hex[:6]}"
    docs = _render(
        helm,
        release,
        ns,
        "--set",
        "deployment.enabled=true,deployment.interval=1,cronJob.enabled=false",
        "--set",
        f"metrics.port={_free_port()}",  # the run below serves its metrics there
    )
    assert "CronJob" not in {d["kind"] for d in docs}
    _create_all(admin, docs, ns)
    name = f"{release}-gpu-allocator"
    deployment = admin.sanitize_for_serialization(
        kubernetes.client.AppsV1Api(admin).read_namespaced_deployment(name, ns)
    )
    args = _container(deployment)["args"]
    assert args[:3] == ["run", "--interval", "1"]

    wns, node = gpu_world.cluster(admin, 4)
    gpu_world.pod(core, wns, "high", 3, "30")
    gpu_world.pod(core, wns, "low", 3, "12")
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "sa.kubeconfig", token)
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(wns, node))
    assert main([*args, "--kubeconfig", str(kubeconfig), "--max-rounds", "2"]) == 0

    assert core.read_namespaced_pod("high", wns).spec.node_name == node
    assert core.read_namespaced_pod("low", wns).spec.node_name is None
    custom = CustomObjectsApi(admin)
    wallet = custom.get_namespaced_custom_object("gpualloc.io", "v1alpha1", wns, "wallets", "w")
    assert wallet["status"]["spent"] == pytest.approx(12.0)
    assert len(wallet["status"]["ledger"]) == 1
    rounds = custom.list_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "allocationrounds"
    )["items"]
    assert [(r["status"]["phase"], r["status"]["winners"]) for r in rounds] == [("Applied", 1)]
    lease = CoordinationV1Api(admin).read_namespaced_lease(name, ns)
    assert lease.spec.holder_identity is None


def test_mig_planning_values_render_the_flags_the_config_map_and_its_rights(
    helm: Path, api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """migPlanning.enabled: the round runs with --mig-planning and its settings, the MIG
    manager's ConfigMap is created in the operator's namespace (mig-parted's format), the
    ClusterRole may patch nodes (their labels and annotations), and a Role there covers only
    that ConfigMap; the API server accepts every object. Off by default: none of it."""
    assert "--mig-planning" not in yaml.safe_dump(_render(helm, "plain", "ops"))
    admin = api_client(control_plane.admin_token)
    ns, operator = _namespace(admin, "chart"), _namespace(admin, "gpu-operator")
    release = f"m{uuid.uuid4().hex[:6]}"
    docs = _render(
        helm,
        release,
        ns,
        "--set",
        f"migPlanning.enabled=true,migPlanning.configMap.namespace={operator}",
        "--set",
        "migPlanning.reconfigureCost=2.5,migPlanning.holdSeconds=600",
    )
    args = _container(next(d for d in docs if d["kind"] == "CronJob"))["args"]
    at = args.index("--mig-planning")
    assert args[at : at + 7] == [
        "--mig-planning",
        "--mig-config-map",
        f"{operator}/gpu-allocator-mig-parted-config",
        "--reconfigure-cost",
        "2.5",
        "--mig-hold",
        "600",
    ]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["namespace"] == operator
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["version"] == "v1" and "all-disabled" in config["mig-configs"]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == operator)
    assert {tuple(r["resources"]) for r in role["rules"]} == {("configmaps",)}
    rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    nodes = next(r for r in rules if r["resources"] == ["nodes"])
    assert nodes["verbs"] == ["get", "list", "patch"]
    for doc in docs:
        ns_of = doc["metadata"].get("namespace", ns)
        resource = DynamicClient(admin).resources.get(
            api_version=doc["apiVersion"], kind=doc["kind"]
        )
        resource.create(body=doc, namespace=ns_of if resource.namespaced else None)


def _inventory_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The inventory's objects of a render, by kind (named ``<fullname>-inventory``)."""
    return {d["kind"]: d for d in docs if d["metadata"]["name"].endswith("-inventory")}


def test_inventory_daemonset_is_off_by_default_and_renders_when_enabled(
    helm: Path, api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """By default nothing of the inventory renders. Enabled, a DaemonSet, its ServiceAccount, a
    ClusterRole of get and patch on nodes and its binding are created for real; the DaemonSet
    runs `inventory --publish --interval 300` on nodes with nvidia.com/gpu.present, under the
    nvidia RuntimeClass, NODE_NAME from spec.nodeName, small requests, no GPU requested, and its
    pods are not the Deployment's (another app name); runtimeClassName "" leaves it unset."""
    assert _inventory_objects(_render(helm, "off", "default")) == {}
    admin = api_client(control_plane.admin_token)
    ns = _namespace(admin, "chart-inv")
    release = f"i{uuid.uuid4().hex[:6]}"
    docs = _render(helm, release, ns, "--set", "inventory.enabled=true,deployment.enabled=true")
    objs = _inventory_objects(docs)
    assert set(objs) == {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    _create_all(admin, docs, ns)
    name = f"{release}-gpu-allocator-inventory"
    ds = admin.sanitize_for_serialization(
        kubernetes.client.AppsV1Api(admin).read_namespaced_daemon_set(name, ns)
    )
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["gpu-allocator"]
    assert container["args"] == ["inventory", "--publish", "--interval", "300"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["serviceAccountName"] == name
    assert container["resources"]["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert any(labels.get(k) != v for k, v in selector.items())
    rules = admin.sanitize_for_serialization(
        kubernetes.client.RbacAuthorizationV1Api(admin).read_cluster_role(name)
    )["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    unset = _render(helm, "u", ns, "--set", "inventory.enabled=true,inventory.runtimeClassName=")
    daemonset = _inventory_objects(unset)["DaemonSet"]
    assert "runtimeClassName" not in daemonset["spec"]["template"]["spec"]


def test_inventory_service_account_publishes_and_nothing_more(
    helm: Path,
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A token of the inventory's ServiceAccount runs the DaemonSet's own arguments (with
    --max-runs 1; NVML faked, no GPU here: tests/harness/fake_nvml.py) and writes the node's
    annotation; it may not list nodes, touch pods or Secrets, or delete or update a node."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = _namespace(admin, "chart-invsa")
    release = f"s{uuid.uuid4().hex[:6]}"
    docs = _render(helm, release, ns, "--set", "inventory.enabled=true,inventory.interval=1")
    _create_all(admin, docs, ns)
    name = f"{release}-gpu-allocator-inventory"
    node = f"inv-{uuid.uuid4().hex[:6]}"
    gpu_world.kwok_node(admin, node, 2, "NVIDIA-H200")
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "inventory.kubeconfig", token)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([h200(0), h200(1)]))
    monkeypatch.setenv("NODE_NAME", node)
    assert main([*args, "--max-runs", "1", "--kubeconfig", str(kubeconfig)]) == 0
    annotations = core.read_node(node).metadata.annotations
    assert len(json.loads(annotations["gpualloc.io/inventory"])["gpus"]) == 2

    sa = api_client(token)
    assert _allowed(sa, None, "get", "nodes") and _allowed(sa, None, "patch", "nodes")
    for ns_, verb, resource in [
        (None, "list", "nodes"),
        (None, "watch", "nodes"),
        (None, "update", "nodes"),
        (None, "delete", "nodes"),
        ("default", "list", "pods"),
        ("default", "get", "secrets"),
        (ns, "create", "events"),
    ]:
        assert not _allowed(sa, ns_, verb, resource), (ns_, verb, resource)
