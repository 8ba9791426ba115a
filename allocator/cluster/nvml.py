"""Read a node's GPUs through NVML (``pynvml``, package ``nvidia-ml-py``, the ``nvml`` extra).

:func:`read_inventory` queries, read-only, each GPU's index, UUID, PCI bus id, product name (and
the catalog model it maps to), memory, MIG mode (current and pending), the GPU instances that
exist (profile and placement) and the far end of every active NVLink, into a
:class:`allocator.cluster.inventory.NodeInventory`. It never changes MIG mode or instances.
``gpu-allocator inventory`` prints it and, with ``--publish``, writes it to the Node's
``gpualloc.io/inventory`` annotation (:func:`publish_every`).

The functions take the ``pynvml`` module as an argument (:func:`load_nvml` imports it lazily),
so that the tests can hand them an object that fakes NVML where no GPU is. NVML's semantics
are those of the NVML API reference (https://docs.nvidia.com/deploy/nvml-api/):
``nvmlDeviceGetGpuInstances`` takes a profile's *id* (``nvmlGpuInstanceProfileInfo_t.id``), not
its ``NVML_GPU_INSTANCE_PROFILE_*`` index, and fails with ``NVML_ERROR_NOT_SUPPORTED`` unless
MIG mode is on; ``nvmlDeviceGetNvLinkState`` fails with ``NVML_ERROR_NOT_SUPPORTED`` on a GPU
without NVLink and ``NVML_ERROR_INVALID_ARGUMENT`` for a link the GPU does not have.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from allocator.cluster.inventory import (
    GpuInventory,
    InventoryError,
    InventoryInstance,
    NodeInventory,
)
from allocator.model.catalog import GpuModel, MigProfile, find_model

__all__ = [
    "MEDIA_PROFILE_INDICES",
    "NvmlError",
    "ProfileRow",
    "catalog_profile",
    "device_basics",
    "gpu_instance_profiles",
    "load_nvml",
    "profile_name",
    "publish_every",
    "read_inventory",
]

_log = logging.getLogger(__name__)

#: NVML's GPU-instance profile indices of the media-extension (``+me``) variants:
#: ``NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1`` and ``..._2_SLICE_REV1``.
MEDIA_PROFILE_INDICES = frozenset((7, 8))
_INSTALL_HINT = "pip install 'gpu-allocator[nvml]' (package nvidia-ml-py)"


class NvmlError(InventoryError):
    """NVML cannot be used here (no Python bindings, no library, no driver, no permission) or
    a query failed; the message says which, of which GPU."""


def load_nvml() -> Any:
    """The ``pynvml`` module; NvmlError when it is not installed."""
    try:
        import pynvml
    except ImportError:
        raise NvmlError(f"the NVML Python bindings are not installed: {_INSTALL_HINT}") from None
    return pynvml


def _text(raw: Any) -> str:
    """A string NVML returned (``pynvml`` decodes some; struct fields stay bytes)."""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _error_code(nvml: Any, e: BaseException) -> int | None:
    return getattr(e, "value", None) if isinstance(e, nvml.NVMLError) else None


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One ``NVML_GPU_INSTANCE_PROFILE_*`` index of a device: NVML's profile info, or the error
    it gave for that index (``Not Supported`` for a profile the GPU lacks)."""

    index: int
    info: Any = None
    error: str | None = None


def gpu_instance_profiles(nvml: Any, handle: Any) -> list[ProfileRow]:
    """Every GPU-instance profile index NVML knows, with its info or error
    (``nvmlDeviceGetGpuInstanceProfileInfo``; it answers with MIG mode off too)."""
    rows = []
    for index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            rows.append(ProfileRow(index, nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)))
        except nvml.NVMLError as e:
            rows.append(ProfileRow(index, error=str(e)))
    return rows


def catalog_profile(model: GpuModel | None, row: ProfileRow, size: int) -> MigProfile | None:
    """The catalog's profile of ``model`` matching NVML's: compute slices, placement size and
    media extensions (None when the catalog has none, or no model)."""
    if model is None or row.info is None:
        return None
    media = row.index in MEDIA_PROFILE_INDICES
    for p in model.profiles:
        if p.compute == row.info.sliceCount and p.size == size and p.media == media:
            return p
    return None


def profile_name(model: GpuModel | None, row: ProfileRow, size: int) -> str:
    """A profile's name (``3g.71gb``): NVML's own (``nvmlGpuInstanceProfileInfo_v2_t.name``,
    ``MIG `` dropped) when it gives one, else the catalog's, else ``<g>g.<GiB>gb`` of its
    slices and memory."""
    own = _text(getattr(row.info, "name", b"") or b"").strip().removeprefix("MIG ").strip()
    if own:
        return own
    known = catalog_profile(model, row, size)
    if known is not None:
        return known.name
    gib = round(row.info.memorySizeMB / 1024)
    return f"{row.info.sliceCount}g.{gib}gb" + ("+me" if row.index in MEDIA_PROFILE_INDICES else "")


@dataclass(frozen=True, slots=True)
class _Basics:
    name: str
    memory_mib: int
    mig_current: bool | None
    mig_pending: bool | None


def device_basics(nvml: Any, handle: Any) -> _Basics:
    """Product name, memory (MiB) and MIG mode (None, None: the GPU cannot do MIG)."""
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory_mib = int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
    try:
        current, pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError as e:
        if _error_code(nvml, e) != nvml.NVML_ERROR_NOT_SUPPORTED:
            raise
        return _Basics(name, memory_mib, None, None)
    enabled = nvml.NVML_DEVICE_MIG_ENABLE
    return _Basics(name, memory_mib, current == enabled, pending == enabled)


def _instances(nvml: Any, handle: Any, model: GpuModel | None) -> tuple[InventoryInstance, ...]:
    """The GPU instances that exist on a GPU in MIG mode, by start."""
    found: list[InventoryInstance] = []
    for row in gpu_instance_profiles(nvml, handle):
        if row.info is None or row.info.instanceCount == 0:
            continue
        array = (nvml.c_nvmlGpuInstance_t * row.info.instanceCount)()
        count = ctypes.c_uint(row.info.instanceCount)
        nvml.nvmlDeviceGetGpuInstances(handle, row.info.id, array, ctypes.byref(count))
        for k in range(count.value):
            placement = nvml.nvmlGpuInstanceGetInfo(array[k]).placement
            start, size = int(placement.start), int(placement.size)
            found.append(InventoryInstance(profile_name(model, row, size), start, size))
    return tuple(sorted(found, key=lambda i: i.start))


def _pci_key(info: Any) -> tuple[int, int, int]:
    """A PCI device's domain, bus and device numbers (the function is left out)."""
    return int(info.domain), int(info.bus), int(info.device)


def _nvlink_ends(nvml: Any, handle: Any) -> Iterator[Any]:
    """The PCI info of the far end of every active NVLink of a GPU."""
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                continue
            yield nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link)
        except nvml.NVMLError as e:
            code = _error_code(nvml, e)
            if code == nvml.NVML_ERROR_NOT_SUPPORTED and link == 0:
                return  # no NVLink on this GPU
            if code in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_INVALID_ARGUMENT):
                continue  # a link this GPU does not have
            raise


def read_inventory(nvml: Any, now: Callable[[], datetime] | None = None) -> NodeInventory:
    """Every GPU of this machine through NVML (see the module docstring); NvmlError when NVML
    cannot start or a query fails (naming the GPU and the query)."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise NvmlError(_init_failure(nvml, e)) from None
    step = "listing the GPUs"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        pci = [nvml.nvmlDeviceGetPciInfo(h) for h in handles]
        local = {_pci_key(p): i for i, p in enumerate(pci)}
        gpus = []
        for i, h in enumerate(handles):
            step = f"GPU {i} ({_text(pci[i].busId)})"
            gpus.append(_gpu(nvml, i, h, _text(pci[i].busId), local))
    except nvml.NVMLError as e:
        raise NvmlError(f"{step}: {e}{_hint(nvml, e)}") from None
    finally:
        nvml.nvmlShutdown()
    return NodeInventory(tuple(gpus), (now or (lambda: datetime.now(UTC)))(), driver)


def _gpu(
    nvml: Any, index: int, handle: Any, bus_id: str, local: dict[tuple[int, int, int], int]
) -> GpuInventory:
    """One GPU: identity, MIG mode and instances, NVLink ends (``local``: PCI -> GPU index)."""
    basics = device_basics(nvml, handle)
    model = find_model(basics.name)
    peers: set[int] = set()
    switches: set[str] = set()
    for end in _nvlink_ends(nvml, handle):
        peer = local.get(_pci_key(end))
        if peer is None:
            switches.add(_text(end.busId))
        elif peer != index:
            peers.add(peer)
    return GpuInventory(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        pci_bus_id=bus_id,
        product=basics.name,
        model=model.name if model is not None else None,
        memory_mib=basics.memory_mib,
        mig_current=basics.mig_current,
        mig_pending=basics.mig_pending,
        mig_instances=_instances(nvml, handle, model) if basics.mig_current else (),
        nvlink_peers=tuple(sorted(peers)),
        nvlink_switches=tuple(sorted(switches)),
    )


def _hint(nvml: Any, e: BaseException) -> str:
    if _error_code(nvml, e) == nvml.NVML_ERROR_NO_PERMISSION:
        return (
            " (listing MIG instances needs the MIG monitor capability: in a container, the "
            "NVIDIA runtime grants it with NVIDIA_MIG_MONITOR_DEVICES=all)"
        )
    return ""


def _init_failure(nvml: Any, e: BaseException) -> str:
    """Why ``nvmlInit`` failed, in words an operator can act on."""
    code = _error_code(nvml, e)
    if code == nvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return (
            "no NVML library (libnvidia-ml.so.1) on this machine: it has no NVIDIA driver, or "
            "the container was not started with the NVIDIA runtime (runtimeClassName: nvidia)"
        )
    if code == nvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "the NVIDIA driver is not loaded on this machine"
    if code == nvml.NVML_ERROR_NO_PERMISSION:
        return "no permission to use NVML (the GPU device files are not accessible)"
    return f"NVML failed to start: {e}"


def publish_every(
    read: Callable[[], NodeInventory],
    publish: Callable[[NodeInventory], None],
    *,
    interval: float | None,
    max_runs: int | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Read and publish once, or every ``interval`` seconds (start to start) until ``stop`` is
    set or ``max_runs`` have run; the number of runs. The first run's errors propagate (a
    DaemonSet pod that cannot work should crash and say why); later ones are logged and the
    next run reads afresh (the API server restarting, a GPU falling off the bus)."""
    stop = stop or threading.Event()
    runs = 0
    while not stop.is_set() and (max_runs is None or runs < max_runs):
        started = clock()
        runs += 1
        try:
            publish(read())
        except Exception:
            if runs == 1:
                raise
            _log.exception("inventory run %d failed; the next one reads afresh", runs)
        if interval is None or (max_runs is not None and runs >= max_runs):
            break
        deadline = started + interval
        while not stop.is_set() and (left := deadline - clock()) > 0:
            time.sleep(min(left, 0.2))
    return runs
