"""Network namespaces for the agents' control planes, as pods would have them (iproute2, as root).

Each agent's etcd, API server and vcluster syncer run in a network namespace of their own: the
syncer always listens on ``localhost:10099`` (hard-coded in vcluster v0.30), so two of them cannot
share one. A bridge in the root namespace joins the agents' namespaces (one veth pair each) and
carries the host's API server address, so every agent reaches the host and the host (the
allocator, the tests) reaches every agent's API server, as in a cluster's pod network.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def can_make_namespaces() -> str | None:
    """None when this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = "gpal-probe-" + secrets.token_hex(3)
    try:
        _ip("netns", "add", name)
    except (RuntimeError, FileNotFoundError) as e:
        return f"cannot make a network namespace: {e}"
    _ip("netns", "del", name)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 under 10.128.0.0/9 that no route of this machine uses (several test sessions may
    run side by side, each with its own bridge)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        try:
            used.append(ipaddress.ip_network(first, strict=False))
        except ValueError:
            continue
    for _ in range(100):
        candidate = ipaddress.ip_network(
            f"10.{128 + secrets.randbelow(127)}.{secrets.randbelow(256)}.0/24"
        )
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free /24 under 10.128.0.0/9 for the test bridge")


@dataclass
class Namespace:
    """A network namespace joined to the lab's bridge at ``address``."""

    name: str
    address: str
    veth: str

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]


class Bridge:
    """A bridge in the root namespace with the lab's gateway address; it hands out namespaces."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.name = f"gpal{self.tag}"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.gateway = str(hosts[0])
        self._free = [str(h) for h in hosts[9:]]
        self._namespaces: list[Namespace] = []
        _ip("link", "add", self.name, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.name)
        _ip("link", "set", self.name, "up")

    def namespace(self, label: str) -> Namespace:
        """A new namespace named after ``label`` with the next free address of the subnet."""
        address = self._free.pop(0)
        index = len(self._namespaces)
        ns = Namespace(f"gpal-{self.tag}-{label}", address, f"gv{self.tag}{index:03d}")
        peer = f"gp{self.tag}{index:03d}"
        _ip("netns", "add", ns.name)
        self._namespaces.append(ns)
        _ip("link", "add", ns.veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", ns.veth, "master", self.name)
        _ip("link", "set", ns.veth, "up")
        _ip("link", "set", peer, "netns", ns.name)
        _ip("link", "set", "lo", "up", netns=ns.name)
        _ip("link", "set", peer, "name", "eth0", netns=ns.name)
        _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0", netns=ns.name)
        _ip("link", "set", "eth0", "up", netns=ns.name)
        _ip("route", "add", "default", "via", self.gateway, netns=ns.name)
        return ns

    def remove(self, ns: Namespace) -> None:
        """Delete a namespace (its end of the veth pair goes with it)."""
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        subprocess.run(["ip", "link", "del", ns.veth], capture_output=True)
        if ns in self._namespaces:
            self._namespaces.remove(ns)

    def close(self) -> None:
        """Delete every namespace handed out and the bridge."""
        for ns in list(self._namespaces):
            self.remove(ns)
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)
