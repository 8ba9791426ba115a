"""A host cluster with agents, each with its own real control plane, for the agents' end-to-end
tests and for benchmarks/agents.py.

- **Host**: etcd + kube-apiserver (built by scripts/build-controlplane) listening on the lab's
  bridge, and kwok (scripts/build-agent-tools) playing the kubelets of the GPU nodes: it marks
  pods bound to its nodes Running and finishes the ones being deleted, as a kubelet would.
- **Agent**: etcd (TLS) + kube-apiserver + vcluster's syncer (scripts/build-agent-tools),
  started as processes inside a network namespace of the agent's own (a pod's, in a cluster),
  the syncer attached to that API server as vcluster v0.30 allows
  (/work/shared/reference/vcluster.md). The syncer runs as the agent's host ServiceAccount
  (``vc-NAME``, from ``gpu-allocator agent create``) with a token from the TokenRequest API, so
  the RBAC that command grants is what the syncer really has.

Nothing here stands in for a component: every server is the real program. Run as root (network
namespaces); the lab removes its processes, namespaces and bridge when closed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwok import kwok_node as kwok_node  # the lab's GPU nodes (re-exported for the tests)
from kwok import server as kwok_server
from network import Bridge, Namespace
from pki import CertificateAuthority, KeyPair, new_key, public_key
from processes import Server, free_port, https_ok, wait_until
from tools import agent_tool, module_dir

# The host's service range; an agent's API server must use the same one. A /16: the syncer makes
# the agent's `kubernetes` Service take the host IP of the Service NAME, which fails (and stops
# the syncer) if the agent's API server has given that IP to another Service; a /24 made that a
# few-percent chance per test session.
SERVICE_RANGE = "10.0.0.0/16"
AGENT_API_PORT = 6443
AGENT_PROXY_PORT = 8443
ADMIN_USER = "lab-admin"
CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "gpu-allocator" / "crds"
AGENT_VALUES = Path(__file__).resolve().parents[2] / "deploy" / "vcluster" / "agent-values.yaml"


def _kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    token: str | None = None,
    client: KeyPair | None = None,
) -> Path:
    user: dict[str, str] = {}
    if token is not None:
        user["token"] = token
    if client is not None:
        user["client-certificate"] = str(client.cert)
        user["client-key"] = str(client.key)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lab", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "lab", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "current-context": "lab",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _api_server_args(
    bin_dir: Path,
    *,
    etcd: str,
    etcd_client: KeyPair | None,
    ca: KeyPair,
    serving: KeyPair,
    sa_key: Path,
    bind: str,
    port: int,
    advertise: str,
    extra: list[str],
) -> list[str]:
    """kube-apiserver's arguments, the same for the host and every agent (one place)."""
    args = [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd}",
        f"--bind-address={bind}",
        f"--advertise-address={advertise}",
        f"--secure-port={port}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={ca.cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={public_key(sa_key)}",
        f"--service-account-signing-key-file={sa_key}",
        f"--service-cluster-ip-range={SERVICE_RANGE}",
        # No endpoint for the 'kubernetes' Service (nothing reaches the API through it here), and
        # no kube-controller-manager creates 'default' ServiceAccounts, which the ServiceAccount
        # admission plugin would demand of every pod.
        "--endpoint-reconciler-type=none",
        "--disable-admission-plugins=ServiceAccount",
        "--v=1",
    ]
    if etcd_client is not None:
        args += [
            f"--etcd-cafile={ca.cert}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
        ]
    return args + extra


def _etcd_args(bin_dir: Path, data: Path, client_url: str, peer_url: str, listen: str) -> list[str]:
    return [
        str(bin_dir / "etcd"),
        "--name=lab",
        f"--data-dir={data}",
        f"--listen-client-urls={listen}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=lab={peer_url}",
        "--log-level=warn",
        # Test data need not survive a power cut; fsync would dominate on a slow disk.
        "--unsafe-no-fsync",
    ]


@dataclass
class Timing:
    """Seconds spent in each step of an agent's start."""

    steps: dict[str, float] = field(default_factory=dict)
    total: float = 0.0


class Host:
    """The host cluster of the lab: etcd + kube-apiserver on the bridge's gateway address."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        work = lab.work / "host"
        (work / "logs").mkdir(parents=True)
        self.work = work
        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        self.url = f"https://{lab.bridge.gateway}:{self.port}"
        self.admin_token = secrets.token_hex(16)
        tokens = work / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n')
        tokens.chmod(0o600)
        serving = lab.ca.issue(
            work,
            "apiserver",
            "kube-apiserver",
            ips=(lab.bridge.gateway, "127.0.0.1", "10.0.0.1"),
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        sa_key = new_key(work / "sa.key")
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.etcd = Server(
            "host-etcd",
            _etcd_args(
                lab.bin_dir, work / "etcd", etcd_url, f"http://127.0.0.1:{peer_port}", etcd_url
            ),
            work / "logs" / "etcd.log",
        )
        self.apiserver = Server(
            "host-kube-apiserver",
            _api_server_args(
                lab.bin_dir,
                etcd=etcd_url,
                etcd_client=None,
                ca=lab.ca.pair,
                serving=serving,
                sa_key=sa_key,
                bind=lab.bridge.gateway,
                port=self.port,
                advertise=lab.bridge.gateway,
                extra=[f"--token-auth-file={tokens}", "--authorization-mode=Node,RBAC"],
            ),
            work / "logs" / "kube-apiserver.log",
        )
        self.kubeconfig = _kubeconfig(
            work / "admin.kubeconfig", self.url, lab.ca.pair.cert, token=self.admin_token
        )
        self.kwok: Server | None = None

    def start(self) -> None:
        self.etcd.start()
        self.apiserver.start()
        wait_until(
            self.apiserver,
            lambda: https_ok(self.url + "/readyz", self.admin_token, self.lab.ca.pair.cert),
            "ready host API server",
        )

    def start_kwok(self) -> None:
        """kwok, managing the nodes annotated ``kwok.x-k8s.io/node=fake`` and their pods."""
        self.kwok = kwok_server(
            self.lab.kwok, self.kubeconfig, self.work, node_ip=self.lab.bridge.gateway
        )
        self.kwok.start()

    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the lab's administrator, with as many pooled
        connections as an apply keeps calls in flight (as ``allocator.cluster.api.connect``)."""
        from kubernetes import client, config

        settings = client.Configuration()
        settings.connection_pool_maxsize = 32
        return config.new_client_from_config(
            config_file=str(self.kubeconfig), client_configuration=settings
        )

    def stop(self) -> None:
        for server in (self.kwok, self.apiserver, self.etcd):
            if server is not None:
                server.stop()


class Agent:
    """One agent's control plane: etcd, kube-apiserver and vcluster's syncer in a network
    namespace of its own. ``kubeconfig`` is what the agent (its programs, kubectl) uses: the
    administrator of its own cluster, nothing on the host."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.host_namespace = f"vc-{name}"
        self.work = lab.work / "agents" / name
        (self.work / "logs").mkdir(parents=True)
        self.net: Namespace | None = None
        self.etcd: Server | None = None
        self.apiserver: Server | None = None
        self.syncer: Server | None = None
        self.kubeconfig = self.work / "agent.kubeconfig"
        self.timing = Timing()
        self._admin: KeyPair | None = None

    @property
    def address(self) -> str:
        assert self.net is not None, "the agent is not started"
        return self.net.address

    @property
    def url(self) -> str:
        return f"https://{self.address}:{AGENT_API_PORT}"

    def _step(self, name: str, started: float) -> float:
        now = time.monotonic()
        self.timing.steps[name] = round(now - started, 3)
        return now

    def start(self) -> Timing:
        """Start the control plane and the syncer, and return once the syncer serves (the
        agent's cluster is ready for pods). The host side (``gpu-allocator agent create``) must
        exist already: the syncer runs as its ServiceAccount."""
        lab = self.lab
        t0 = t = time.monotonic()
        self.net = lab.bridge.namespace(self.name)
        t = self._step("network", t)
        ca = lab.ca
        ips = (self.address, "127.0.0.1", "10.0.0.1")
        dns = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        serving = ca.issue(self.work / "pki", "apiserver", "kube-apiserver", ips=ips, dns=dns)
        self._admin = ca.issue(
            self.work / "pki", "admin", "agent-admin", organisation="system:masters"
        )
        sa_key = new_key(self.work / "pki" / "sa.key")
        t = self._step("certificates", t)
        prefix = self.net.exec_prefix()
        # The API server runs with the arguments and environment our values file gives the
        # virtual API server in a real cluster (deploy/vcluster/agent-values.yaml).
        shipped_args, shipped_env = shipped_apiserver_settings()
        etcd_url = f"https://{self.address}:2379"
        self.etcd = Server(
            f"{self.name}-etcd",
            prefix
            + _etcd_args(
                lab.bin_dir,
                self.work / "etcd",
                etcd_url,
                "http://127.0.0.1:2380",
                "https://0.0.0.0:2379",
            )
            + [
                f"--cert-file={serving.cert}",
                f"--key-file={serving.key}",
                "--client-cert-auth",
                f"--trusted-ca-file={ca.pair.cert}",
            ],
            self.work / "logs" / "etcd.log",
        )
        self.apiserver = Server(
            f"{self.name}-kube-apiserver",
            prefix
            + _api_server_args(
                lab.bin_dir,
                etcd="https://127.0.0.1:2379",
                etcd_client=self._admin,
                ca=ca.pair,
                serving=serving,
                sa_key=sa_key,
                bind="0.0.0.0",
                port=AGENT_API_PORT,
                advertise=self.address,
                extra=[
                    "--authorization-mode=RBAC",
                    *shipped_args,
                    *lab.agent_apiserver_args,
                ],
            ),
            self.work / "logs" / "kube-apiserver.log",
            env={**os.environ, **shipped_env, **lab.agent_apiserver_env},
        )
        self.etcd.start()
        self.apiserver.start()
        _kubeconfig(self.kubeconfig, self.url, ca.pair.cert, client=self._admin)
        # While the API server starts: the syncer's configuration and host credentials.
        syncer_env = self._prepare_syncer()
        t = self._step("syncer-config", t)
        wait_until(
            self.apiserver,
            lambda: https_ok(
                self.url + "/readyz",
                ca_file=ca.pair.cert,
                client_cert=(self._admin.cert, self._admin.key),
            ),
            f"ready API server of agent {self.name}",
        )
        t = self._step("apiserver-ready", t)
        self._seed_virtual_cluster(dns=False)
        t = self._step("seed", t)
        self.syncer = Server(
            f"{self.name}-syncer",
            [
                *prefix,
                "sh",
                "-c",
                # vcluster writes /root/.kube/config (a hard-coded path) when run as root: give
                # it a private one in this mount namespace (ip netns exec makes one per command).
                'mkdir -p /root/.kube && mount -t tmpfs lab-kube /root/.kube && exec "$@"',
                "syncer",
                str(lab.vcluster),
                "start",
                f"--config={self.work / 'vcluster.yaml'}",
            ],
            self.work / "logs" / "syncer.log",
            env=syncer_env,
        )
        self.syncer.start()
        proxy = f"https://{self.address}:{AGENT_PROXY_PORT}/readyz"
        wait_until(
            self.syncer,
            lambda: https_ok(proxy, ca_file=None, client_cert=(self._admin.cert, self._admin.key)),
            f"serving syncer of agent {self.name}",
        )
        t = self._step("syncer-ready", t)
        self._seed_virtual_cluster(dns=True)
        if not self.syncer.alive():
            raise RuntimeError(
                f"the syncer of agent {self.name} exited; last log lines ({self.syncer.log}):\n"
                + self.syncer.log_tail()
            )
        self._step("dns", t)
        self.timing.total = round(time.monotonic() - t0, 3)
        return self.timing

    def _prepare_syncer(self) -> dict[str, str]:
        """Write the syncer's configuration (vcluster v0.30 values, attached to this agent's own
        etcd and API server), its Secret ``vc-config-NAME`` on the host, and a host kubeconfig
        with a token of the agent's ServiceAccount ``vc-NAME``; return the syncer's environment."""
        import yaml
        from kubernetes import client as k8s

        lab = self.lab
        assert self._admin is not None
        virtual = _kubeconfig(
            self.work / "virtual-admin.kubeconfig",
            f"https://127.0.0.1:{AGENT_API_PORT}",
            lab.ca.pair.cert,
            client=self._admin,
        )
        config = {
            "serviceCIDR": SERVICE_RANGE,
            "controlPlane": {
                "distro": {
                    "k8s": {
                        "enabled": True,
                        "apiServer": {"enabled": False},
                        "controllerManager": {"enabled": False},
                        "scheduler": {"enabled": False},
                    }
                },
                "backingStore": {
                    "etcd": {
                        "external": {
                            "enabled": True,
                            "endpoint": "127.0.0.1:2379",
                            "tls": {
                                "caFile": str(lab.ca.pair.cert),
                                "certFile": str(self._admin.cert),
                                "keyFile": str(self._admin.key),
                            },
                        }
                    }
                },
                "coredns": {"enabled": False},
                # Its serving certificate must cover the address the host reaches it at.
                "proxy": {
                    "bindAddress": "0.0.0.0",
                    "port": AGENT_PROXY_PORT,
                    "extraSANs": [self.address],
                },
            },
            "exportKubeConfig": {"server": f"https://{self.address}:{AGENT_PROXY_PORT}"},
            "experimental": {
                "virtualClusterKubeConfig": {
                    "kubeConfig": str(virtual),
                    "serverCACert": str(lab.ca.pair.cert),
                    "serverCAKey": str(lab.ca.pair.key),
                    "clientCACert": str(lab.ca.pair.cert),
                    "requestHeaderCACert": str(lab.ca.pair.cert),
                }
            },
            "telemetry": {"enabled": False},
        }
        # Without vcluster's own defaults the syncer enables nothing it is not told to (no
        # services, so no kube-dns on the host, so no pod synced): start from them, then the
        # values we ship for agents (deploy/vcluster/agent-values.yaml), then what makes the
        # syncer a process attached to this agent's own etcd and API server.
        shipped = yaml.safe_load(AGENT_VALUES.read_text())
        config = _merged(_merged(lab.vcluster_defaults(), shipped), config)
        text = json.dumps(config, indent=2)  # JSON is valid YAML
        (self.work / "vcluster.yaml").write_text(text)
        api = lab.host_client()
        core = k8s.CoreV1Api(api)
        secret = {
            "metadata": {"name": f"vc-config-{self.name}"},
            "type": "Opaque",
            "data": {"config.yaml": base64.b64encode(text.encode()).decode()},
        }
        try:
            core.create_namespaced_secret(self.host_namespace, secret)
        except k8s.ApiException as e:
            if e.status != 409:
                raise
            core.replace_namespaced_secret(f"vc-config-{self.name}", self.host_namespace, secret)
        token = core.create_namespaced_service_account_token(
            f"vc-{self.name}",
            self.host_namespace,
            {"spec": {"expirationSeconds": 86400}},
        ).status.token
        host = _kubeconfig(
            self.work / "host.kubeconfig", lab.host.url, lab.ca.pair.cert, token=token
        )
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work),
            "KUBECONFIG": str(host),
            "VCLUSTER_NAME": self.name,
            "POD_NAME": f"{self.name}-0",
            "POD_NAMESPACE": self.host_namespace,
            "NAMESPACE": self.host_namespace,
            **lab.syncer_env,
        }

    def _seed_virtual_cluster(self, *, dns: bool) -> None:
        """What the agent's missing controller manager and CoreDNS would have made, and which the
        syncer waits for: the ``default/default`` ServiceAccount (before the syncer starts) or,
        with ``dns``, a ``kube-system/kube-dns`` Service (after the syncer has given the agent's
        ``kubernetes`` Service its host IP: made before, it could hold that very IP)."""
        from kubernetes import client as k8s
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        core = k8s.CoreV1Api(api)
        if dns:
            host_ip = (
                k8s.CoreV1Api(self.lab.host_client())
                .read_namespaced_service(self.name, self.host_namespace)
                .spec.cluster_ip
            )

            def at_host_ip() -> bool:
                try:  # the syncer deletes and recreates it to change its IP
                    svc = core.read_namespaced_service("kubernetes", "default")
                except k8s.ApiException as e:
                    if e.status == 404:
                        return False
                    raise
                return bool(svc.spec.cluster_ip == host_ip)

            wait_for(
                f"agent {self.name}'s kubernetes Service at the host IP {host_ip}",
                at_host_ip,
                timeout=60,
                every=0.05,
            )
            body = {
                "metadata": {"name": "kube-dns"},
                "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
            }
            create = lambda: core.create_namespaced_service("kube-system", body)  # noqa: E731
        else:
            create = lambda: core.create_namespaced_service_account(  # noqa: E731
                "default", {"metadata": {"name": "default"}}
            )
        try:
            create()
        except k8s.ApiException as e:
            if e.status != 409:
                raise
        finally:
            api.close()

    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on the agent's own API server (as the agent)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def stop_control_plane(self) -> None:
        """Stop the syncer, then the API server, then etcd (an API server whose etcd is gone
        hangs); the network namespace stays, so ``start`` cannot be called again."""
        for server in (self.syncer, self.apiserver, self.etcd):
            if server is not None:
                server.stop()

    def rss_mb(self) -> float:
        """Resident memory of the agent's processes (etcd, API server, syncer), in MB."""
        total = 0
        for server in (self.etcd, self.apiserver, self.syncer):
            if server is None or server.proc is None:
                continue
            total += _group_rss_kib(server.proc.pid)
        return total / 1024.0

    def close(self) -> None:
        self.stop_control_plane()
        if self.net is not None:
            self.lab.bridge.remove(self.net)
            self.net = None


def shipped_apiserver_settings() -> tuple[list[str], dict[str, str]]:
    """The virtual API server's extra arguments and environment in the values file we ship
    (``controlPlane.distro.k8s.apiServer.extraArgs`` and ``controlPlane.distro.k8s.env``)."""
    import yaml

    k8s = (yaml.safe_load(AGENT_VALUES.read_text()).get("controlPlane") or {}).get("distro", {})
    k8s = k8s.get("k8s") or {}
    args = [str(a) for a in (k8s.get("apiServer") or {}).get("extraArgs") or []]
    env = {str(e["name"]): str(e["value"]) for e in k8s.get("env") or []}
    return args, env


def _merged(base: Any, override: Any) -> Any:
    """``override`` deep-merged over ``base`` (mappings merged key by key, the rest replaced)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merged(base.get(key), value)
        return out
    return override


def _group_rss_kib(pgid: int) -> int:
    """Sum of VmRSS over the processes of process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def wait_for(what: str, probe: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll ``probe()`` until it returns something truthy and return that; AssertionError naming
    ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"no {what} after {timeout:.0f} s (last: {last!r})")


def binaries() -> tuple[Path, Path, Path, list[Path]]:
    """(control-plane bin folder, vcluster, kwok, the ones of them missing): where
    scripts/build-controlplane and scripts/build-agent-tools put them."""
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    bin_dir = Path(
        subprocess.run(
            [str(scripts / "build-controlplane"), "--print-bin-dir"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    vcluster, kwok = agent_tool("vcluster"), agent_tool("kwok")
    needed = (bin_dir / "etcd", bin_dir / "kube-apiserver", vcluster, kwok)
    return bin_dir, vcluster, kwok, [p for p in needed if not p.is_file()]


def limited_fetch(namespaces: set[str], nodes: set[str]) -> Any:
    """A stand-in for ``allocator.cluster.api.fetch`` that reads the real API server but keeps
    only these namespaces' pods and Wallets and these nodes (tests share the lab's host). The
    sets may grow while it is in use."""
    from allocator.cluster import api as cluster_api

    def fetch(client: Any, config: Any = None) -> Any:
        all_nodes, pods, wallets = cluster_api.fetch(client, config)
        return (
            [n for n in all_nodes if n["metadata"]["name"] in nodes],
            [p for p in pods if p["metadata"]["namespace"] in namespaces],
            [w for w in wallets if w["metadata"]["namespace"] in namespaces],
        )

    return fetch


def install_crds(api: Any) -> None:
    """The chart's CRDs on the API server behind ``api``, waited for until Established."""
    import yaml
    from kubernetes.client import ApiextensionsV1Api
    from kubernetes.client.exceptions import ApiException

    ext = ApiextensionsV1Api(api)
    docs = [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]
    for doc in docs:
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as e:
            if e.status != 409:
                raise
    for doc in docs:
        name = doc["metadata"]["name"]
        wait_for(
            f"CRD {name} Established",
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in (ext.read_custom_resource_definition(name).status.conditions or [])
            ),
            timeout=30,
        )


class MarketLoop:
    """The allocator's watch-driven rounds (``allocator.cluster.loop.watch_rounds``) in a
    thread, limited to some namespaces and nodes (tests share the lab's host), telling the
    agents' clusters; ``rounds`` records every round, ``error`` what ended the loop early. A
    context manager; the loop stops (after its round) on exit."""

    def __init__(
        self,
        host: Any,
        namespaces: set[str],
        nodes: set[str],
        record_namespace: str,
        *,
        interval: float = 5.0,
        eviction_wait: float = 30.0,
    ) -> None:
        from allocator.cluster.publish import AgentClusters

        self.host = host
        self.namespaces = namespaces
        self.nodes = nodes
        self.record_namespace = record_namespace
        self.interval = interval
        self.eviction_wait = eviction_wait
        self.rounds: list[Any] = []
        self.stop = threading.Event()
        self.clusters = AgentClusters(host)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from allocator.cluster.loop import watch_rounds
        from allocator.cluster.options import RoundOptions

        options = RoundOptions(
            record_namespace=self.record_namespace,
            agent_clusters=self.clusters,
            eviction_wait=self.eviction_wait,
        )
        try:
            watch_rounds(
                self.host,
                None,
                options,
                interval=self.interval,
                stop=self.stop,
                on_round=self.rounds.append,
            )
        except BaseException as e:  # reported by the test
            self.error = e

    def __enter__(self) -> MarketLoop:
        import allocator.cluster.loop as loop

        self._saved = loop.fetch
        loop.fetch = limited_fetch(self.namespaces, self.nodes)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import allocator.cluster.loop as loop

        self.stop.set()
        self.thread.join(timeout=60)
        loop.fetch = self._saved
        self.clusters.close()


class Lab:
    """The host and its agents. ``bin_dir`` holds etcd and kube-apiserver; ``vcluster`` and
    ``kwok`` are the binaries scripts/build-agent-tools builds."""

    def __init__(self, work: Path, bin_dir: Path, vcluster: Path, kwok: Path) -> None:
        self.work = work
        self.bin_dir = bin_dir
        self.vcluster = vcluster
        self.kwok = kwok
        work.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(work / "ca")
        self.bridge = Bridge()
        self.agents: dict[str, Agent] = {}
        # Knobs of an agent's API server and syncer (benchmarks/agents.py measures them).
        self.agent_apiserver_args: list[str] = []
        self.agent_apiserver_env: dict[str, str] = {}
        self.syncer_env: dict[str, str] = {}
        self.host = Host(self)
        self._lock = threading.Lock()
        self._host_api: Any = None
        self._vcluster_defaults: dict[str, Any] | None = None

    def start(self, kwok: bool = True) -> None:
        self.host.start()
        if kwok:
            self.host.start_kwok()

    def vcluster_defaults(self) -> dict[str, Any]:
        """vcluster's default values (``config/values.yaml`` of the release tests/vcluster/go.mod
        pins, read from the Go module cache that scripts/build-agent-tools filled)."""
        import yaml

        if self._vcluster_defaults is None:
            folder = module_dir("vcluster", "github.com/loft-sh/vcluster")
            self._vcluster_defaults = yaml.safe_load(
                (folder / "config" / "values.yaml").read_text()
            )
        return dict(self._vcluster_defaults)

    def install_crds(self) -> None:
        """The chart's CRDs on the host."""
        install_crds(self.host_client())

    def host_client(self) -> Any:
        with self._lock:
            if self._host_api is None:
                self._host_api = self.host.client()
            return self._host_api

    def agent(self, name: str) -> Agent:
        """A new agent's control plane (not started; see :meth:`Agent.start`)."""
        if name in self.agents:
            raise ValueError(f"agent {name} exists in the lab")
        agent = Agent(self, name)
        self.agents[name] = agent
        return agent

    def remove_agent(self, name: str) -> None:
        agent = self.agents.pop(name)
        agent.close()

    def close(self) -> None:
        for agent in list(self.agents.values()):
            agent.close()
        self.agents.clear()
        self.host.stop()
        if self._host_api is not None:
            self._host_api.close()
        self.bridge.close()
