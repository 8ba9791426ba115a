"""NVIDIA's MIG manager and device plugin played by a test thread (no GPU here).

What it follows is the GPU Operator's documented label protocol (NVIDIA GPU Operator docs,
"GPUs with Multi-Instance GPU", gpu-operator-mig; mig-parted's ``reconfigure-mig.sh``): when a
node's label ``nvidia.com/mig.config`` names a configuration it has not applied, the manager sets
``nvidia.com/mig.config.state=pending``, reads the configuration from its ConfigMap (key
``config.yaml``, mig-parted's ``version: v1`` / ``mig-configs`` format), applies it, and sets
``success``; if applying fails it sets ``failed`` and the instances stay as they were. Once it
succeeds, the device plugin advertises ``nvidia.com/mig-<profile>`` per profile (the mixed
strategy; a profile no longer present stays at 0, as the kubelet keeps stale resources), and GPU
Feature Discovery labels ``nvidia.com/mig-<profile>.count``. ``fail`` names nodes whose changes
fail; ``delay`` (per node) is how long a change stays pending (a slow reconfiguration).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

STATE = "nvidia.com/mig.config.state"
CONFIG = "nvidia.com/mig.config"


class MigManagerStandIn:
    """A context manager; ``applied`` maps node -> configurations applied, in order, with the
    time ``success`` was set (``time.monotonic()``); ``failed`` lists (node, config)."""

    def __init__(
        self,
        admin: Any,
        namespace: str,
        config_map: str,
        nodes: list[str],
        *,
        fail: frozenset[str] = frozenset(),
        delay: dict[str, float] | None = None,
    ) -> None:
        from kubernetes.client import CoreV1Api

        self.core = CoreV1Api(admin)
        self.namespace, self.config_map = namespace, config_map
        self.nodes = nodes
        self.fail = fail
        self.delay = delay or {}
        self.applied: dict[str, list[tuple[str, float]]] = {n: [] for n in nodes}
        self.failed: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MigManagerStandIn:
        for name in self.nodes:  # what the node was carved to before the test
            self._seen[name] = self.core.read_node(name).metadata.labels.get(CONFIG, "")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name in self.nodes:
                try:
                    wanted = self.core.read_node(name).metadata.labels.get(CONFIG, "")
                    if wanted and wanted != self._seen[name]:
                        self._seen[name] = wanted
                        self._apply(name, wanted)
                except Exception as e:
                    self.errors.append(f"{name}: {e!r}")

    def _label(self, name: str, labels: dict[str, str | None]) -> None:
        self.core.patch_node(name, {"metadata": {"labels": labels}})

    def _apply(self, name: str, config: str) -> None:
        import yaml

        self._label(name, {STATE: "pending"})
        time.sleep(self.delay.get(name, 0.3))
        if name in self.fail:
            self._label(name, {STATE: "failed"})
            self.failed.append((name, config))
            return
        cm = self.core.read_namespaced_config_map(self.config_map, self.namespace)
        entries = yaml.safe_load(cm.data["config.yaml"])["mig-configs"][config]
        node = self.core.read_node(name)
        gpus = int(node.metadata.labels["nvidia.com/gpu.count"])
        counts: Counter[str] = Counter()
        for entry in entries:
            devices = range(gpus) if entry["devices"] == "all" else entry["devices"]
            if entry.get("mig-enabled"):
                for profile, n in (entry.get("mig-devices") or {}).items():
                    counts[profile] += n * len(list(devices))
        old = {k for k in node.status.allocatable if k.startswith("nvidia.com/mig-")}
        res = {k: "0" for k in old}  # the kubelet keeps a resource gone at 0
        res.update({f"nvidia.com/mig-{p.replace('+', '.')}": str(n) for p, n in counts.items()})
        self.core.patch_node_status(name, {"status": {"capacity": res, "allocatable": res}})
        gfd: dict[str, str | None] = {
            k: None
            for k in node.metadata.labels
            if k.startswith("nvidia.com/mig-") and k.endswith(".count")
        }
        gfd.update({f"nvidia.com/mig-{p}.count": str(n) for p, n in counts.items()})
        self._label(name, {**gfd, STATE: "success"})
        self.applied[name].append((config, time.monotonic()))
