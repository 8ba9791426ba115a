"""The test control plane is real: authentication, RBAC, the status subresource, persistence in
etcd across an API server restart, and the default scheduler binding a GPU pod."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, VersionApi  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

pytestmark = pytest.mark.k8s

GPU = "nvidia.com/gpu"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gpu_node(api_client: Callable[[str], Any], control_plane: Any, gpu_world: Any) -> Any:
    """A factory: (name, gpus) -> a Node advertising ``gpus`` A100s in its status as the device
    plugin would, run by kwok (Ready, heartbeating) and, once Ready, without the not-ready taint,
    as the node lifecycle controller would make it (no kube-controller-manager runs here)."""
    api = api_client(control_plane.admin_token)

    def make(name: str, gpus: int) -> str:
        return str(gpu_world.kwok_node(api, name, gpus, "A100-SXM4-80GB"))

    return make


@pytest.fixture
def admin(api_client: Callable[[str], Any], control_plane: Any) -> CoreV1Api:
    """CoreV1Api authenticated with the administrator's token."""
    return CoreV1Api(api_client(control_plane.admin_token))


def test_api_server_reports_the_pinned_release(
    api_client: Callable[[str], Any], control_plane: Any
) -> None:
    """/version names the Kubernetes release go.mod pins, so the binary is the one built here."""
    go_mod = (Path(__file__).parents[1] / "controlplane" / "go.mod").read_text()
    pinned = next(
        line.split()[1] for line in go_mod.splitlines() if line.split()[:1] == ["k8s.io/kubernetes"]
    )
    version = VersionApi(api_client(control_plane.admin_token)).get_code()
    assert version.git_version == pinned


def test_admin_creates_namespace_and_gpu_node(admin: CoreV1Api, gpu_node: Any) -> None:
    """The admin token creates a namespace and a Node whose status advertises nvidia.com/gpu;
    kwok makes it Ready, keeps what its status advertises, and heartbeats through its Lease."""
    namespace = _name("ns")
    admin.create_namespace({"metadata": {"name": namespace}})
    assert admin.read_namespace(namespace).status.phase == "Active"

    node = _name("gpu-node")
    gpu_node(node, gpus=8)
    read = admin.read_node(node)
    ready = {c.type: c.status for c in read.status.conditions}
    assert ready["Ready"] == "True"
    assert read.status.capacity[GPU] == "8" and read.status.capacity["cpu"] == "128"
    assert read.status.allocatable[GPU] == "8" and read.status.allocatable["pods"] == "250"
    assert read.metadata.labels["nvidia.com/gpu.product"] == "A100-SXM4-80GB"
    assert not any(t.key == "node.kubernetes.io/not-ready" for t in read.spec.taints or [])
    coordination = kubernetes.client.CoordinationV1Api(admin.api_client)
    deadline = time.monotonic() + 30
    while True:
        try:
            lease = coordination.read_namespaced_lease(node, "kube-node-lease")
            break
        except ApiException as e:
            assert e.status == 404 and time.monotonic() < deadline, "no Lease for the node"
            time.sleep(0.2)
    assert lease.spec.holder_identity and lease.spec.renew_time is not None


def test_status_is_a_subresource(admin: CoreV1Api, gpu_node: Any) -> None:
    """A plain update of a Node does not change its status: only the status subresource does."""
    node = _name("gpu-node")
    gpu_node(node, gpus=4)
    body = admin.read_node(node)
    body.status.capacity[GPU] = "99"
    admin.replace_node(node, body)
    assert admin.read_node(node).status.capacity[GPU] == "4"


def test_unprivileged_token_is_forbidden_to_read_secrets(
    api_client: Callable[[str], Any], control_plane: Any
) -> None:
    """The role-less user is authenticated (403, not 401) but RBAC forbids reading Secrets."""
    user = CoreV1Api(api_client(control_plane.user_token))
    with pytest.raises(ApiException) as forbidden:
        user.list_namespaced_secret("default")
    assert forbidden.value.status == 403
    assert control_plane.user_name in forbidden.value.body

    with pytest.raises(ApiException) as anonymous:
        CoreV1Api(api_client("not-a-token")).list_namespaced_secret("default")
    assert anonymous.value.status == 401


def test_objects_survive_an_api_server_restart(
    admin: CoreV1Api, control_plane_processes: Any, gpu_node: Any
) -> None:
    """After the API server is stopped and started again, etcd still holds what was written."""
    namespace = _name("ns")
    node = _name("gpu-node")
    admin.create_namespace({"metadata": {"name": namespace}})
    admin.create_namespaced_config_map(
        namespace, {"metadata": {"name": "kept"}, "data": {"round": "7"}}
    )
    gpu_node(node, gpus=8)
    old_pid = control_plane_processes.apiserver.proc.pid

    control_plane_processes.stop_apiserver()
    with pytest.raises(Exception):  # noqa: B017 (connection refused: any urllib3 error)
        admin.read_namespace(namespace, _request_timeout=2)
    control_plane_processes.start_apiserver()

    assert control_plane_processes.apiserver.proc.pid != old_pid
    assert admin.read_namespace(namespace).metadata.name == namespace
    assert admin.read_namespaced_config_map("kept", namespace).data == {"round": "7"}
    assert admin.read_node(node).status.capacity[GPU] == "8"


def test_default_scheduler_binds_a_gpu_pod(
    admin: CoreV1Api, control_plane_processes: Any, gpu_node: Any, gpu_world: Any
) -> None:
    """kube-scheduler binds a pod requesting nvidia.com/gpu to the only node that has them, and
    the node's kubelet (kwok) runs it."""
    namespace = _name("ns")
    admin.create_namespace({"metadata": {"name": namespace}})
    node = _name("gpu-node")
    gpu_node(node, gpus=2)
    control_plane_processes.start_scheduler()
    admin.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.invalid/trainer:1",
                        "resources": {"limits": {GPU: "2"}},
                    }
                ],
            },
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = admin.read_namespaced_pod("trainer", namespace)
        if pod.spec.node_name:
            break
        time.sleep(0.2)
    conditions = {c.type: c.message for c in pod.status.conditions or []}
    assert pod.spec.node_name == node, conditions.get("PodScheduled")
    gpu_world.running(admin, namespace, "trainer")
