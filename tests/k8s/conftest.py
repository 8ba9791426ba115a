"""A real control plane for the end-to-end tests: etcd, kube-apiserver and kube-scheduler, and
kwok playing the kubelets of the GPU nodes.

The servers are the ones ``scripts/build-controlplane`` compiles from the Go module proxy at the
releases ``tests/controlplane/go.mod`` pins; nothing here fakes the API. They listen on loopback
on free ports, keep their data in a temporary folder, and run in process groups of their own that
teardown kills, so a test session leaves no process behind (the kernel also kills them if pytest
itself dies). The API server authenticates static bearer tokens and authorises with Node and RBAC:
``admin_token`` is in ``system:masters``; ``user_token`` belongs to a user with no role at all.

kwok (``scripts/build-agent-tools`` builds it; tests/harness/kwok.py) runs for the session as soon
as a test asks for ``kwok`` or ``gpu_world``: the GPU nodes ``gpu_world`` creates are kwok's (Ready,
heartbeating), the pods bound to them go Running and the ones deleted are finished, as on a real
cluster. It manages only the nodes annotated ``kwok.x-k8s.io/node=fake``; a node without the
annotation is one where no kubelet runs.

Missing binaries skip these tests with the reason, unless ``GPUALLOC_REQUIRE_K8S=1`` (set by
``.ci/run``), which turns that skip into a failure.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))
# The harness folder is on sys.path only from here.
from kwok import kwok_node  # noqa: E402
from kwok import server as kwok_server  # noqa: E402
from processes import (  # noqa: E402
    Server,
    die_with_parent,
    free_port,
    http_ok,
    https_ok,
    wait_until,
)
from tools import agent_tool  # noqa: E402

_Server, _free_port, _die_with_parent = Server, free_port, die_with_parent
_wait_until, _https_ok, _http_ok = wait_until, https_ok, http_ok
BUILD_SCRIPT = REPO / "scripts" / "build-controlplane"
HELM_BUILD_SCRIPT = REPO / "scripts" / "build-helm"
# On CI (.ci/run) nothing here may be skipped: every would-be skip is reported as a failure.
REQUIRED = os.environ.get("GPUALLOC_REQUIRE_K8S") == "1"

ADMIN_USER = "gpualloc-test-admin"
PLAIN_USER = "gpualloc-test-user"
# The scheduler authenticates as the user the default RBAC policy already grants its role to.
SCHEDULER_USER = "system:kube-scheduler"


@dataclass(frozen=True)
class ControlPlane:
    """How to reach the test API server: its URL, the CA that signed its serving certificate,
    and bearer tokens for an administrator and for a user without any role."""

    url: str
    ca_file: Path
    admin_token: str
    user_token: str
    user_name: str = PLAIN_USER
    insecure_skip_verify: bool = False

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        """Write a kubeconfig for ``token`` to ``path`` (JSON is valid YAML) and return it."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path


class ControlPlaneProcesses:
    """etcd and kube-apiserver for one test session, plus the means to restart the API server
    and to start kube-scheduler against it. Teardown stops everything it started."""

    def __init__(self, bin_dir: Path, work: Path) -> None:
        self.bin_dir = bin_dir
        self.work = work
        (work / "logs").mkdir(parents=True)
        etcd_port, etcd_peer_port, api_port = _free_port(), _free_port(), _free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.etcd = _Server(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=test",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=test=http://127.0.0.1:{etcd_peer_port}",
                "--log-level=warn",
                # Test data need not survive a power cut; fsync would dominate on a slow disk.
                "--unsafe-no-fsync",
            ],
            work / "logs" / "etcd.log",
        )
        tokens = {
            "admin": os.urandom(16).hex(),
            "user": os.urandom(16).hex(),
            "scheduler": os.urandom(16).hex(),
        }
        self.scheduler_token = tokens["scheduler"]
        token_file = work / "tokens.csv"
        token_file.write_text(
            f'{tokens["admin"]},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{tokens['user']},{PLAIN_USER},uid-user\n"
            f"{tokens['scheduler']},{SCHEDULER_USER},uid-scheduler\n"
        )
        token_file.chmod(0o600)
        sa_key = work / "service-account.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"],
            check=True,
            capture_output=True,
        )
        cert_dir = work / "apiserver-certs"
        self.apiserver = _Server(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                # Self-signed serving certificate (and its CA) written here at first start and
                # reused by later starts, so a restart keeps the CA the clients trust.
                f"--cert-dir={cert_dir}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No endpoint for the 'kubernetes' Service: a loopback address is not a valid
                # endpoint, and nothing in the tests reaches the API server through a Service.
                "--endpoint-reconciler-type=none",
                # No kube-controller-manager runs to create each namespace's 'default'
                # ServiceAccount, which the ServiceAccount admission plugin would demand of
                # every pod; pods name their ServiceAccount explicitly where it matters.
                "--disable-admission-plugins=ServiceAccount",
                "--v=1",
            ],
            work / "logs" / "kube-apiserver.log",
        )
        self.schedulers: list[_Server] = []
        self.kwok: _Server | None = None
        self._scheduler_args: dict[int, tuple[str, ...]] = {}  # id(server) -> its extra args
        self.connection = ControlPlane(
            url=f"https://127.0.0.1:{api_port}",
            ca_file=cert_dir / "apiserver.crt",
            admin_token=tokens["admin"],
            user_token=tokens["user"],
        )

    def start(self) -> None:
        self.etcd.start()
        _wait_until(self.etcd, lambda: _http_ok(self.etcd_url + "/health"), "healthy etcd")
        self.start_apiserver()

    def start_apiserver(self) -> None:
        """Start the API server and wait until /readyz says ok (all post-start hooks done)."""
        self.apiserver.start()
        url = self.connection.url + "/readyz"
        token = self.connection.admin_token
        _wait_until(self.apiserver, lambda: _https_ok(url, token), "ready API server")
        if not _https_ok(url, token, self.connection.ca_file):
            raise RuntimeError(f"the API server's certificate does not verify against {url}")

    def stop_apiserver(self) -> None:
        """Stop the API server (etcd keeps running, so the cluster's state is kept)."""
        self.apiserver.stop()

    def restart_apiserver(self) -> None:
        """Stop the API server and start it again on the same port with the same data."""
        self.stop_apiserver()
        self.start_apiserver()

    def start_scheduler(self, extra_args: tuple[str, ...] = ()) -> _Server:
        """Start a kube-scheduler against the API server, wait until /healthz says ok, and
        return it; it runs until ``stop`` is called on it or the session ends. At most one runs
        at a time: one already running with the same arguments is returned, one with others is
        stopped first (two schedulers both named default-scheduler race for the same pods and
        can put more on a node than it has, as a flaky side-by-side run once showed)."""
        for running in self.schedulers:
            if running.alive():
                if self._scheduler_args.get(id(running)) == tuple(extra_args):
                    return running
                running.stop()
        index = len(self.schedulers)
        kubeconfig = self.connection.write_kubeconfig(
            self.work / f"scheduler-{index}.kubeconfig", self.scheduler_token
        )
        port = _free_port()
        server = _Server(
            f"kube-scheduler-{index}",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.work / f'scheduler-{index}-certs'}",
                "--leader-elect=false",
                "--v=1",
                *extra_args,
            ],
            self.work / "logs" / f"kube-scheduler-{index}.log",
        )
        self.schedulers.append(server)
        self._scheduler_args[id(server)] = tuple(extra_args)
        server.start()
        url = f"https://127.0.0.1:{port}/healthz"
        _wait_until(server, lambda: _https_ok(url), "healthy kube-scheduler")
        return server

    def start_kwok(self, binary: Path) -> _Server:
        """Start kwok (``binary``) against the API server as the administrator, managing the
        nodes annotated ``kwok.x-k8s.io/node=fake`` (tests/harness/kwok.py); it runs until
        :meth:`stop`, through API server restarts (it reconnects, as a kubelet does)."""
        if self.kwok is None or not self.kwok.alive():
            kubeconfig = self.connection.write_kubeconfig(
                self.work / "kwok.kubeconfig", self.connection.admin_token
            )
            self.kwok = kwok_server(binary, kubeconfig, self.work / "kwok")
            self.kwok.start()
        return self.kwok

    def stop(self) -> None:
        for server in [*self.schedulers, self.kwok, self.apiserver, self.etcd]:
            if server is not None:
                server.stop()


def _bin_dir() -> Path:
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(result.stdout.strip())


def _require_binaries(bin_dir: Path) -> None:
    names = ("etcd", "kube-apiserver", "kube-scheduler")
    missing = [name for name in names if not (bin_dir / name).is_file()]
    if not missing:
        return
    reason = (
        f"control-plane binaries not built ({', '.join(missing)} missing in {bin_dir}): "
        "run scripts/build-controlplane (needs Go)"
    )
    if REQUIRED:
        pytest.fail(reason + "; GPUALLOC_REQUIRE_K8S=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def _kwok_binary() -> Path:
    """kwok as scripts/build-agent-tools builds it; a missing one skips, or fails under
    GPUALLOC_REQUIRE_K8S=1."""
    binary = agent_tool("kwok")
    if not binary.is_file():
        reason = f"kwok not built ({binary} missing): run scripts/build-agent-tools (needs Go)"
        if REQUIRED:
            pytest.fail(reason + "; GPUALLOC_REQUIRE_K8S=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    return binary


def _refuse_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but GPUALLOC_REQUIRE_K8S=1 forbids skipping: {report.longrepr}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With GPUALLOC_REQUIRE_K8S=1, report a skipped end-to-end test as failed, with the reason."""
    report = yield
    _refuse_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """The same for a test module skipped as a whole (a missing kubernetes package)."""
    report = yield
    _refuse_skip(report)
    return report


@pytest.fixture(scope="session")
def helm() -> Path:
    """The ``helm`` binary that ``scripts/build-helm`` builds (the chart's renderer); a missing
    one skips, or fails under GPUALLOC_REQUIRE_K8S=1."""
    result = subprocess.run(
        [str(HELM_BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    binary = Path(result.stdout.strip()) / "helm"
    if not binary.is_file():
        reason = f"helm not built ({binary} missing): run scripts/build-helm (needs Go)"
        if REQUIRED:
            pytest.fail(reason + "; GPUALLOC_REQUIRE_K8S=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def control_plane_processes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlaneProcesses]:
    """etcd + kube-apiserver for the whole session, ready; stopped at the end."""
    bin_dir = _bin_dir()
    _require_binaries(bin_dir)
    processes = ControlPlaneProcesses(bin_dir, tmp_path_factory.mktemp("controlplane"))
    atexit.register(processes.stop)  # also when pytest is interrupted before teardown
    try:
        processes.start()
        yield processes
    finally:
        processes.stop()
        atexit.unregister(processes.stop)


@pytest.fixture(scope="session")
def kwok(control_plane_processes: ControlPlaneProcesses) -> _Server:
    """kwok against the session's API server, the kubelet of every node annotated
    ``kwok.x-k8s.io/node=fake``; started at the first test asking for it, stopped with the
    control plane."""
    binary = _kwok_binary()
    try:
        return control_plane_processes.start_kwok(binary)
    except RuntimeError as e:  # its stages are read from the Go module cache: Go is needed
        if REQUIRED:
            pytest.fail(f"{e}; GPUALLOC_REQUIRE_K8S=1 forbids skipping", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def control_plane(control_plane_processes: ControlPlaneProcesses) -> ControlPlane:
    """Connection details of the session's API server."""
    return control_plane_processes.connection


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Callable[[str], Any]:
    """A factory: token -> ``kubernetes.client.ApiClient`` that verifies the server's CA."""
    kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")

    def make(token: str) -> Any:
        configuration = kubernetes.client.Configuration()
        configuration.host = control_plane.url
        configuration.ssl_ca_cert = str(control_plane.ca_file)
        configuration.verify_ssl = not control_plane.insecure_skip_verify
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return kubernetes.client.ApiClient(configuration)

    return make


CRD_DIR = REPO / "charts" / "gpu-allocator" / "crds"


@pytest.fixture(scope="session")
def gpualloc_crds(api_client: Callable[[str], Any], control_plane: ControlPlane) -> list[Any]:
    """Create every CRD of the chart (once per session) and wait until each is Established;
    returns the CRD documents."""
    pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
    import yaml
    from agentlab import install_crds

    install_crds(api_client(control_plane.admin_token))
    return [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]


# Helpers of the round and fault tests (a fixture, since test modules cannot import each other).
def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _namespace_with_wallet(admin: Any) -> str:
    """A new namespace with a 50-unit Wallet ``w``."""
    ns = _unique("round")
    _core_api(admin).create_namespace({"metadata": {"name": ns}})
    create_wallet(admin, ns, "w", 50)
    return ns


def _gpu_pod(
    core: Any,
    ns: str,
    name: str,
    gpus: int,
    bid: str,
    scheduler: str = "gpu-allocator",
    wallet: str = "w",
) -> None:
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {
                "name": name,
                "annotations": {"gpualloc.io/bid": bid, "gpualloc.io/wallet": wallet},
            },
            "spec": {
                "schedulerName": scheduler,
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.invalid/none",
                        "resources": {
                            "requests": {"nvidia.com/gpu": str(gpus)},
                            "limits": {"nvidia.com/gpu": str(gpus)},
                        },
                    }
                ],
            },
        },
    )


def _only_view(ns: str, *nodes: str) -> Any:
    """A view of the cluster limited to one test's namespace and nodes (other tests share the
    API server): wraps fetch's output through a ClusterConfig-independent filter."""
    from allocator.cluster import api as cluster_api

    real_fetch = cluster_api.fetch

    def fetch(api: Any, config: Any = None) -> Any:
        all_nodes, pods, wallets = real_fetch(api, config)
        return (
            [n for n in all_nodes if n["metadata"]["name"] in nodes],
            [p for p in pods if p["metadata"]["namespace"] == ns],
            [w for w in wallets if w["metadata"]["namespace"] == ns],
        )

    return fetch


def create_wallet(admin: Any, ns: str, name: str, balance: float) -> Any:
    from allocator.cluster.api import create_wallet as create

    return create(admin, ns, name, balance)


def _core_api(admin: Any) -> Any:
    from kubernetes.client import CoreV1Api

    return CoreV1Api(admin)


def _custom_api(admin: Any) -> Any:
    from kubernetes.client import CustomObjectsApi

    return CustomObjectsApi(admin)


class GpuWorld:
    """The GPU cluster helpers of the round, fault and watch tests (``gpu_world``); node names
    are unique, so that other tests' nodes do not interfere with what is asserted. GPU nodes are
    kwok's (the session's ``kwok`` runs them): Ready, pods bound there go Running, pods deleted
    there are finished."""

    def __init__(self, kwok: _Server) -> None:
        self.kwok = kwok

    def kwok_node(
        self, admin: Any, name: str, gpus: int, product: str = "H100-80GB", **kw: Any
    ) -> str:
        """A kwok node ``name`` advertising NVIDIA device-plugin resources, returned once
        Ready and schedulable: ``gpus`` whole GPUs of ``product``, or with ``mig={profile:
        count}`` the mixed strategy's ``nvidia.com/mig-<profile>`` instances (and ``whole``
        GPUs with MIG off), GFD's labels, ``labels`` added (see tests/harness/kwok.py)."""
        return kwok_node(admin, name, gpus, product, kwok=self.kwok, **kw)

    def node(self, admin: Any, gpus: int, **kw: Any) -> str:
        """A kwok node of ``gpus`` H100s, uniquely named ``gpu-...``."""
        return self.kwok_node(admin, _unique("gpu"), gpus, **kw)

    def unmanaged_node(self, admin: Any, gpus: int, **kw: Any) -> str:
        """A GPU node where no kubelet runs (kwok leaves it alone): nothing starts its pods or
        finishes the ones being deleted. For tests that need a pod to stay terminating."""
        return kwok_node(admin, _unique("gpu-nokubelet"), gpus, managed=False, **kw)

    @staticmethod
    def namespace(admin: Any) -> str:
        """A new namespace with a 50-unit Wallet ``w``."""
        return _namespace_with_wallet(admin)

    def cluster(self, admin: Any, gpus: int, **kw: Any) -> tuple[str, str]:
        """A namespace with a 50-unit Wallet ``w`` and one kwok node of ``gpus`` GPUs."""
        return _namespace_with_wallet(admin), self.node(admin, gpus, **kw)

    pod = staticmethod(_gpu_pod)
    only = staticmethod(_only_view)

    @staticmethod
    def running(core: Any, ns: str, name: str, timeout_s: float = 30.0) -> Any:
        """The pod once its kubelet (kwok) reports it Running and Ready."""

        def ready(pod: Any) -> bool:
            conditions = pod.status.conditions or []
            return pod.status.phase == "Running" and any(
                c.type == "Ready" and c.status == "True" for c in conditions
            )

        return _poll(
            f"{ns}/{name} Running", lambda: core.read_namespaced_pod(name, ns), ready, timeout_s
        )

    @staticmethod
    def gone(core: Any, ns: str, name: str, timeout_s: float = 30.0) -> None:
        """Return once the pod no longer exists (its kubelet finished it)."""
        from kubernetes.client.exceptions import ApiException

        def read() -> Any:
            try:
                return core.read_namespaced_pod(name, ns)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise

        _poll(f"{ns}/{name} gone", read, lambda pod: pod is None, timeout_s)


def _poll(what: str, read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = read()
        if done(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s:.0f} s (last: {got!r})")
        time.sleep(0.05)


@pytest.fixture()
def gpu_world(kwok: _Server) -> GpuWorld:
    """:class:`GpuWorld`: ``cluster(admin, gpus) -> (namespace, node)`` with a 50-unit Wallet
    ``w``; ``namespace(admin)``: the same without a node; ``node(admin, gpus) -> node`` and
    ``kwok_node(admin, name, gpus, product=..., mig={profile: count}, whole=..., shared=...,
    labels=...)``: kwok nodes; ``unmanaged_node(admin, gpus)``: a node no kubelet runs;
    ``pod(core, ns, name, gpus, bid, scheduler="gpu-allocator", wallet="w")``;
    ``only(ns, *nodes)``: a fetch limited to them; ``running(core, ns, name)``,
    ``gone(core, ns, name)``: wait for kwok to start or finish a pod."""
    return GpuWorld(kwok)
