"""A stand-in for the ``pynvml`` module, for the tests of ``gpu-allocator inventory``.

No GPU (and no NVIDIA driver) is on the development and CI machines, so these tests fake NVML:
:class:`FakeNvml` is a module object implementing just the NVML functions
``allocator.cluster.nvml`` calls, with the semantics of the NVML API reference
(https://docs.nvidia.com/deploy/nvml-api/, "Device Queries", "Multi Instance GPU Management",
"NvLink Methods") and the types and error values of ``pynvml`` (nvidia-ml-py):

- every call but ``nvmlInit`` fails with ``NVML_ERROR_UNINITIALIZED`` before ``nvmlInit`` (and
  after the matching ``nvmlShutdown``); ``nvmlInit`` fails with
  ``NVML_ERROR_LIBRARY_NOT_FOUND`` where there is no ``libnvidia-ml.so.1``;
- ``nvmlDeviceGetMigMode`` fails with ``NVML_ERROR_NOT_SUPPORTED`` on a GPU that cannot do MIG;
- ``nvmlDeviceGetGpuInstanceProfileInfo`` takes a ``NVML_GPU_INSTANCE_PROFILE_*`` index and
  answers with MIG mode off too (as the recorded H200 did), ``NVML_ERROR_NOT_SUPPORTED`` for a
  profile the GPU lacks, ``NVML_ERROR_INVALID_ARGUMENT`` past the indices the driver knows;
- ``nvmlDeviceGetGpuInstances`` takes a profile's *id* (not its index), fills the caller's
  array and count, and fails with ``NVML_ERROR_NOT_SUPPORTED`` unless MIG mode is on;
  ``nvmlGpuInstanceGetInfo`` gives the instance's placement (start, size);
- ``nvmlDeviceGetNvLinkState`` fails with ``NVML_ERROR_NOT_SUPPORTED`` on a GPU without
  NVLink and ``NVML_ERROR_INVALID_ARGUMENT`` for a link number the GPU does not have;
  ``nvmlDeviceGetNvLinkRemotePciInfo`` gives the far end's PCI info (another GPU, or an
  NVSwitch).

Anything that would change a GPU (MIG mode, creating instances) is absent, so calling it fails.
The H200's profiles come from ``docs/hardware/h200-nvml-mig.json`` (recorded read-only on a real
H200, driver 580.159.04).
"""

from __future__ import annotations

import ctypes
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD = Path(__file__).resolve().parents[2] / "docs" / "hardware" / "h200-nvml-mig.json"

# Values of nvml.h (and pynvml).
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
_ERROR_TEXT = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
}
_TEXT_ERROR = {text: code for code, text in _ERROR_TEXT.items()}


class NVMLError(Exception):
    """pynvml's error: ``value`` is the NVML return code, ``str()`` its text."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERROR_TEXT.get(self.value, f"NVML Error with code {self.value}")


@dataclass(frozen=True)
class Profile:
    """One GPU-instance profile index of a GPU: NVML's info, or the error NVML gives for it."""

    index: int
    id: int = 0
    slice_count: int = 0
    instance_count: int = 0
    memory_mb: int = 0
    size: int = 0
    name: bytes = b""
    error: int | None = None


@dataclass
class FakeGpu:
    """One GPU. ``mig``: (current, pending) or None (cannot do MIG); ``instances``: (profile
    index, start) of the GPU instances that exist; ``links``: per NVLink, the PCI bus id of
    the far end when active, None when down; None for a GPU without NVLink."""

    name: str
    uuid: str
    bus_id: str
    memory_mib: int
    mig: tuple[int, int] | None = (0, 0)
    profiles: tuple[Profile, ...] = ()
    instances: list[tuple[int, int]] = field(default_factory=list)
    links: list[str | None] | None = None
    instance_permission: bool = True


def pci_numbers(bus_id: str) -> tuple[int, int, int, int]:
    """Domain, bus, device and function of ``DDDDDDDD:BB:DD.F``."""
    domain, bus, rest = bus_id.split(":")
    device, function = rest.split(".")
    return int(domain, 16), int(bus, 16), int(device, 16), int(function, 16)


class _PciInfo:
    """``nvmlPciInfo_t``: ``busId`` is a C string field (bytes in pynvml)."""

    def __init__(self, bus_id: str) -> None:
        self.busId = bus_id.encode()
        self.domain, self.bus, self.device, _ = pci_numbers(bus_id)


class FakeNvml(types.ModuleType):
    """The fake ``pynvml`` module over ``gpus`` (see the module docstring); ``library``: False
    makes ``nvmlInit`` fail as without ``libnvidia-ml.so.1``."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
    NVML_NVLINK_MAX_LINKS = 18
    # nvmlGpuInstance_t is an opaque pointer; here a number naming (GPU, instance).
    c_nvmlGpuInstance_t = ctypes.c_void_p

    def __init__(self, gpus: list[FakeGpu], driver: str = "580.159.04", library: bool = True):
        super().__init__("pynvml")
        self.gpus = gpus
        self.driver = driver
        self.library = library
        self.initialised = 0
        self.calls: list[str] = []

    def _ready(self, call: str) -> None:
        self.calls.append(call)
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, int) or not 0 <= handle < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[handle]

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if not self.library:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._ready("nvmlShutdown")
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._ready("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._ready("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._ready("nvmlDeviceGetHandleByIndex")
        self._gpu(index)
        return index

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._ready("nvmlDeviceGetName")
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._ready("nvmlDeviceGetUUID")
        return self._gpu(handle).uuid

    def nvmlDeviceGetPciInfo(self, handle: Any) -> _PciInfo:
        self._ready("nvmlDeviceGetPciInfo")
        return _PciInfo(self._gpu(handle).bus_id)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._ready("nvmlDeviceGetMemoryInfo")
        total = self._gpu(handle).memory_mib * 1024 * 1024
        return types.SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        self._ready("nvmlDeviceGetMigMode")
        mig = self._gpu(handle).mig
        if mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return list(mig)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int) -> Any:
        self._ready("nvmlDeviceGetGpuInstanceProfileInfo")
        gpu = self._gpu(handle)
        if gpu.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= profile < self.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        p = next((p for p in gpu.profiles if p.index == profile), None)
        if p is None or p.error is not None:
            raise NVMLError(p.error if p is not None and p.error else NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(
            id=p.id,
            sliceCount=p.slice_count,
            instanceCount=p.instance_count,
            memorySizeMB=p.memory_mb,
            name=p.name,
        )

    def nvmlDeviceGetGpuInstances(
        self, handle: Any, profile_id: int, instances: Any, count: Any
    ) -> int:
        self._ready("nvmlDeviceGetGpuInstances")
        gpu = self._gpu(handle)
        if gpu.mig is None or gpu.mig[0] != self.NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not gpu.instance_permission:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        profile = next((p for p in gpu.profiles if p.error is None and p.id == profile_id), None)
        if profile is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        found = [k for k, (index, _) in enumerate(gpu.instances) if index == profile.index]
        if len(found) > len(instances):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # the caller's buffer is too small
        for slot, k in enumerate(found):
            instances[slot] = (handle << 16) | (k + 1)
        count._obj.value = len(found)  # a ctypes.byref(c_uint)
        return NVML_SUCCESS

    def nvmlGpuInstanceGetInfo(self, instance: Any) -> Any:
        self._ready("nvmlGpuInstanceGetInfo")
        handle, k = int(instance or 0) >> 16, (int(instance or 0) & 0xFFFF) - 1
        gpu = self._gpu(handle)
        if not 0 <= k < len(gpu.instances):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        index, start = gpu.instances[k]
        profile = next(p for p in gpu.profiles if p.index == index)
        placement = types.SimpleNamespace(start=start, size=profile.size)
        return types.SimpleNamespace(id=k + 1, profileId=profile.id, placement=placement)

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        self._ready("nvmlDeviceGetNvLinkState")
        links = self._gpu(handle).links
        if links is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < len(links):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.NVML_FEATURE_ENABLED if links[link] else self.NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: Any, link: int) -> _PciInfo:
        self._ready("nvmlDeviceGetNvLinkRemotePciInfo")
        links = self._gpu(handle).links
        if links is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < len(links) or links[link] is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _PciInfo(str(links[link]))


def h200_profiles(*, names: bool = False) -> tuple[Profile, ...]:
    """The H200's profiles as NVML reported them (the recorded file): the info of each index, or
    its error. The record holds no profile names; ``names`` adds NVIDIA's (``MIG 1g.18gb``)."""
    device = json.loads(RECORD.read_text(encoding="utf-8"))["devices"][0]
    catalog = {  # (profile index) -> NVIDIA's name, from docs/catalog.md's H200 row
        0: "1g.18gb",
        1: "2g.35gb",
        2: "3g.71gb",
        3: "4g.71gb",
        4: "7g.141gb",
        7: "1g.18gb+me",
        9: "1g.35gb",
    }
    out = []
    for row in device["profiles"]:
        if "error" in row:
            out.append(Profile(row["profile_index"], error=_TEXT_ERROR[row["error"]]))
            continue
        out.append(
            Profile(
                index=row["profile_index"],
                id=row["id"],
                slice_count=row["slice_count"],
                instance_count=row["instance_count"],
                memory_mb=row["memory_mb"],
                size=row["placements"][0][1],
                name=f"MIG {catalog[row['profile_index']]}".encode() if names else b"",
            )
        )
    return tuple(out)


def recorded_h200() -> tuple[str, int, tuple[int, int]]:
    """The recorded H200's name, memory (MiB) and MIG mode (current, pending)."""
    device = json.loads(RECORD.read_text(encoding="utf-8"))["devices"][0]
    mode = device["mig_mode"]
    return device["name"], device["memory_mib"], (mode["current"], mode["pending"])


def h200(
    index: int,
    *,
    mig: tuple[int, int] | None = None,
    instances: list[tuple[int, int]] | None = None,
    links: list[str | None] | None = None,
    names: bool = False,
) -> FakeGpu:
    """An H200 as the record shows it (MIG off unless ``mig``), at bus ``0000000<index>:..``."""
    name, memory_mib, mode = recorded_h200()
    return FakeGpu(
        name=name,
        uuid=f"GPU-00000000-0000-0000-0000-{index:012d}",
        bus_id=bus(index),
        memory_mib=memory_mib,
        mig=mig or mode,
        profiles=h200_profiles(names=names),
        instances=list(instances or []),
        links=links,
    )


def bus(index: int) -> str:
    """The PCI bus id of GPU ``index`` in these scenarios (as NVML writes it)."""
    return f"00000000:{0x18 + 0x10 * index:02X}:00.0"


def nvlink_groups(
    count: int, groups: list[list[int]], links_per_pair: int = 2
) -> list[list[str | None]]:
    """Per GPU, its NVLinks: ``links_per_pair`` active links to each other GPU of its group,
    then two links that are down (as on boards with unused links)."""
    out: list[list[str | None]] = [[] for _ in range(count)]
    for group in groups:
        for i in group:
            for j in group:
                if i != j:
                    out[i] += [bus(j)] * links_per_pair
    for links in out:
        links += [None, None]
    return out


SWITCHES = [f"00000000:{0xA0 + k:02X}:00.0" for k in range(4)]


def nvswitch_links(count: int) -> list[list[str | None]]:
    """Per GPU, 18 NVLinks spread over four NVSwitches (an HGX board): no GPU at a far end."""
    return [[SWITCHES[link % 4] for link in range(18)] for _ in range(count)]
