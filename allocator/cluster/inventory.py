"""A node's GPU inventory as NVML reports it: the ``gpualloc.io/inventory`` Node annotation.

``gpu-allocator inventory --publish`` (a DaemonSet, :mod:`allocator.cluster.nvml`) writes it;
the reader (:mod:`allocator.cluster.read`) takes the NVLink domains of whole GPUs from it, and
:meth:`NodeInventory.mig_layouts` gives the MIG instances that exist on each GPU. Pure: text in,
frozen data out (and back); no API calls, no NVML. The format is in docs/kubernetes.md ("Node
inventory (NVML)"):

.. code-block:: json

    {"version": 1, "read_at": "2026-12-01T10:00:00Z", "driver": "580.159.04",
     "gpus": [{"index": 0, "uuid": "GPU-...", "pci_bus_id": "00000000:19:00.0",
               "product": "NVIDIA H200", "model": "H200-141GB", "memory_mib": 143771,
               "mig": {"current": true, "pending": true},
               "mig_instances": [{"profile": "3g.71gb", "start": 0, "size": 4}],
               "nvlink_peers": [1], "nvlink_switches": []}, ...],
     "nvlink_domains": [[0, 1], ...]}

Fields may be added within version 1 (a reader ignores the ones it does not know); a change
that an older reader would misread gets a new version, which that reader refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from allocator.cluster.config import ANNOTATION_PREFIX
from allocator.model.problem import MigInstance

__all__ = [
    "INVENTORY_ANNOTATION",
    "INVENTORY_VERSION",
    "GpuInventory",
    "InventoryError",
    "InventoryInstance",
    "NodeInventory",
    "connected_components",
    "inventory_to_dict",
    "node_inventory",
    "parse_inventory",
]

INVENTORY_ANNOTATION = ANNOTATION_PREFIX + "inventory"
INVENTORY_VERSION = 1


class InventoryError(RuntimeError):
    """``gpu-allocator inventory`` could not do its work (NVML, or the API server, refused);
    the message says what, in words an operator can act on."""


@dataclass(frozen=True, slots=True)
class InventoryInstance:
    """A MIG GPU instance that exists: its profile (``3g.71gb``) and placement, memory slices
    ``[start, start + size)``."""

    profile: str
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """One GPU as NVML reports it.

    ``index`` is NVML's device index; ``model`` the catalog's name of ``product``, None when the
    catalog does not know it; ``mig_current`` / ``mig_pending`` the MIG mode (None: the GPU
    cannot do MIG); ``nvlink_peers`` the indices of the GPUs of this node at the other end of an
    active NVLink, ``nvlink_switches`` the PCI bus ids of the other ends that are not GPUs of
    this node (NVSwitches): GPUs reaching the same one share NVLink.
    """

    index: int
    uuid: str
    pci_bus_id: str
    product: str
    model: str | None
    memory_mib: int
    mig_current: bool | None = None
    mig_pending: bool | None = None
    mig_instances: tuple[InventoryInstance, ...] = ()
    nvlink_peers: tuple[int, ...] = ()
    nvlink_switches: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeInventory:
    """What NVML reported on one node, when (``read_at``, UTC) and under which driver."""

    gpus: tuple[GpuInventory, ...]
    read_at: datetime
    driver: str | None = None
    _domains: tuple[tuple[int, ...], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        edges: list[tuple[int, int | str]] = []
        for g in self.gpus:
            edges += [(g.index, p) for p in g.nvlink_peers]
            edges += [(g.index, f"switch {s}") for s in g.nvlink_switches]
        domains = connected_components([g.index for g in self.gpus], edges)
        object.__setattr__(self, "_domains", domains)

    def nvlink_domains(self) -> tuple[tuple[int, ...], ...]:
        """The GPUs that share NVLink, directly or through NVSwitches (connected components of
        the links, each sorted, ordered by their first index); a GPU with no NVLink is alone."""
        return self._domains

    def nvlink_domain_of(self) -> dict[int, int]:
        """GPU index -> the position of its domain in :meth:`nvlink_domains`."""
        return {i: k for k, domain in enumerate(self._domains) for i in domain}

    def mig_layouts(self) -> dict[int, tuple[MigInstance, ...]]:
        """The MIG instances that exist on each GPU in MIG mode (GPU index -> instances by
        start): NVML's profile names and start slots, for the MIG layout work."""
        return {
            g.index: tuple(
                MigInstance(i.profile, i.start)
                for i in sorted(g.mig_instances, key=lambda i: i.start)
            )
            for g in self.gpus
            if g.mig_current
        }

    def whole_gpus(self) -> tuple[GpuInventory, ...]:
        """The GPUs with MIG off (or unable to do MIG), by index: what the device plugin
        publishes as ``nvidia.com/gpu`` (outside its single strategy)."""
        return tuple(g for g in self.gpus if not g.mig_current)


def connected_components(
    nodes: Iterable[int], edges: Iterable[tuple[int, int | str]]
) -> tuple[tuple[int, ...], ...]:
    """Connected components of the integer ``nodes`` under ``edges`` (undirected; an end that
    is not one of ``nodes``, such as a switch, joins everything linked to it), each sorted,
    ordered by their smallest node."""
    parent: dict[int | str, int | str] = {n: n for n in nodes}

    def root(x: int | str) -> int | str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[int | str, list[int]] = {}
    for n in [n for n in parent if isinstance(n, int)]:
        groups.setdefault(root(n), []).append(n)
    return tuple(sorted(tuple(sorted(g)) for g in groups.values()))


def _time_text(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def inventory_to_dict(inv: NodeInventory) -> dict[str, Any]:
    """The annotation's document (see the module docstring)."""
    out: dict[str, Any] = {"version": INVENTORY_VERSION, "read_at": _time_text(inv.read_at)}
    if inv.driver is not None:
        out["driver"] = inv.driver
    out["gpus"] = [_gpu_to_dict(g) for g in inv.gpus]
    out["nvlink_domains"] = [list(d) for d in inv.nvlink_domains()]
    return out


def _gpu_to_dict(g: GpuInventory) -> dict[str, Any]:
    mig = None if g.mig_current is None else {"current": g.mig_current, "pending": g.mig_pending}
    return {
        "index": g.index,
        "uuid": g.uuid,
        "pci_bus_id": g.pci_bus_id,
        "product": g.product,
        "model": g.model,
        "memory_mib": g.memory_mib,
        "mig": mig,
        "mig_instances": [
            {"profile": i.profile, "start": i.start, "size": i.size} for i in g.mig_instances
        ],
        "nvlink_peers": list(g.nvlink_peers),
        "nvlink_switches": list(g.nvlink_switches),
    }


def node_inventory(node: Mapping[str, Any]) -> NodeInventory | None:
    """The inventory a Node API object carries in its annotation, None when it has none.
    ValueError naming the field (``metadata.annotations[gpualloc.io/inventory].gpus[2]...``)."""
    ann = (node.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(INVENTORY_ANNOTATION)
    if raw is None:
        return None
    return parse_inventory(raw, f"metadata.annotations[{INVENTORY_ANNOTATION}]")


def parse_inventory(text: str | bytes, path: str = "inventory") -> NodeInventory:
    """The validated inventory of an annotation's text; ValueError ``<path>.<field>: why``."""
    try:
        doc = json.loads(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    return _Parser(path).inventory(doc)


class _Parser:
    """The document's checks, one method per part; every error names its field under
    ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def fail(self, where: str, why: str) -> ValueError:
        return ValueError(f"{self.root}{where}: {why}")

    def obj(self, raw: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be an object, got {raw!r}")
        return raw

    def array(self, raw: Any, where: str) -> Sequence[Any]:
        if not isinstance(raw, list):
            raise self.fail(where, f"must be an array, got {raw!r}")
        return raw

    def integer(self, raw: Any, where: str, least: int) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < least:
            raise self.fail(where, f"must be an integer >= {least}, got {raw!r}")
        return raw

    def text(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw:
            raise self.fail(where, f"must be a non-empty string, got {raw!r}")
        return raw

    def flag(self, raw: Any, where: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(where, f"must be true or false, got {raw!r}")
        return raw

    def inventory(self, raw: Any) -> NodeInventory:
        doc = self.obj(raw, "")
        if "version" not in doc:
            raise self.fail(".version", "missing")
        if doc["version"] != INVENTORY_VERSION:
            raise self.fail(
                ".version",
                f"{doc['version']!r} is not a version this reader knows ({INVENTORY_VERSION})",
            )
        read_at = self.time(doc.get("read_at"), ".read_at")
        driver = doc.get("driver")
        if driver is not None:
            self.text(driver, ".driver")
        gpus = tuple(
            self.gpu(g, f".gpus[{k}]") for k, g in enumerate(self.array(doc.get("gpus"), ".gpus"))
        )
        self.references(gpus)
        inv = NodeInventory(gpus, read_at, driver)
        if "nvlink_domains" in doc:
            written = self.array(doc["nvlink_domains"], ".nvlink_domains")
            if written != [list(d) for d in inv.nvlink_domains()]:
                raise self.fail(
                    ".nvlink_domains",
                    f"{written!r} are not the connected components of the GPUs' nvlink_peers "
                    f"and nvlink_switches {[list(d) for d in inv.nvlink_domains()]!r}",
                )
        return inv

    def time(self, raw: Any, where: str) -> datetime:
        if not isinstance(raw, str):
            raise self.fail(where, f"must be an RFC 3339 time, got {raw!r}")
        try:
            t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(where, f"must be an RFC 3339 time, got {raw!r}") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    def gpu(self, raw: Any, where: str) -> GpuInventory:
        g = self.obj(raw, where)
        mig = g.get("mig")
        current = pending = None
        if mig is not None:
            m = self.obj(mig, f"{where}.mig")
            current = self.flag(m.get("current"), f"{where}.mig.current")
            pending = self.flag(m.get("pending"), f"{where}.mig.pending")
        model = g.get("model")
        if model is not None:
            self.text(model, f"{where}.model")
        instances = self.instances(g.get("mig_instances", []), f"{where}.mig_instances")
        if instances and not current:
            raise self.fail(f"{where}.mig_instances", "MIG instances on a GPU with MIG off")
        peers = self.array(g.get("nvlink_peers", []), f"{where}.nvlink_peers")
        switches = self.array(g.get("nvlink_switches", []), f"{where}.nvlink_switches")
        return GpuInventory(
            index=self.integer(g.get("index"), f"{where}.index", 0),
            uuid=self.text(g.get("uuid"), f"{where}.uuid"),
            pci_bus_id=self.text(g.get("pci_bus_id"), f"{where}.pci_bus_id"),
            product=self.text(g.get("product"), f"{where}.product"),
            model=model,
            memory_mib=self.integer(g.get("memory_mib"), f"{where}.memory_mib", 0),
            mig_current=current,
            mig_pending=pending,
            mig_instances=instances,
            nvlink_peers=tuple(
                self.integer(p, f"{where}.nvlink_peers[{k}]", 0) for k, p in enumerate(peers)
            ),
            nvlink_switches=tuple(
                self.text(s, f"{where}.nvlink_switches[{k}]") for k, s in enumerate(switches)
            ),
        )

    def instances(self, raw: Any, where: str) -> tuple[InventoryInstance, ...]:
        out: list[InventoryInstance] = []
        for k, item in enumerate(self.array(raw, where)):
            at = f"{where}[{k}]"
            i = self.obj(item, at)
            inst = InventoryInstance(
                profile=self.text(i.get("profile"), f"{at}.profile"),
                start=self.integer(i.get("start"), f"{at}.start", 0),
                size=self.integer(i.get("size"), f"{at}.size", 1),
            )
            for other in out:
                if inst.start < other.start + other.size and other.start < inst.start + inst.size:
                    raise self.fail(
                        f"{at}.start",
                        f"{inst.profile} at [{inst.start}, {inst.start + inst.size}) overlaps "
                        f"{other.profile} at [{other.start}, {other.start + other.size})",
                    )
            out.append(inst)
        return tuple(out)

    def references(self, gpus: Sequence[GpuInventory]) -> None:
        """Indices are unique; every NVLink peer is another GPU of the document."""
        seen: set[int] = set()
        for k, g in enumerate(gpus):
            if g.index in seen:
                raise self.fail(f".gpus[{k}].index", f"GPU {g.index} appears twice")
            seen.add(g.index)
        for k, g in enumerate(gpus):
            for j, p in enumerate(g.nvlink_peers):
                if p == g.index or p not in seen:
                    raise self.fail(
                        f".gpus[{k}].nvlink_peers[{j}]",
                        f"{p} is not another GPU of this node ({sorted(seen)})",
                    )
