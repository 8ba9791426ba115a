"""Read-only NVML check of the MIG catalog against a real GPU.

Prints JSON: the device name, memory, MIG mode, and for every GPU-instance profile NVML reports
its slice count, instance count, name and possible placements, compared to ``allocator.CATALOG``.
It never changes MIG mode or creates instances. The NVML queries it shares with
``gpu-allocator inventory`` (profiles, name, memory, MIG mode) are in
``allocator.cluster.nvml``; it needs the ``k8s`` and ``nvml`` extras.

    python scripts/nvml_mig_check.py > mig_check.json
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

import pynvml

from allocator.cluster.nvml import ProfileRow, device_basics, gpu_instance_profiles
from allocator.model import find_model


def _profile_row(handle: Any, row: ProfileRow) -> dict[str, Any]:
    if row.info is None:
        return {"profile_index": row.index, "error": row.error}
    info = row.info
    out: dict[str, Any] = {
        "profile_index": row.index,
        "id": info.id,
        "slice_count": info.sliceCount,
        "instance_count": info.instanceCount,
        "memory_mb": info.memorySizeMB,
        "multiprocessors": info.multiprocessorCount,
        "name": bytes(getattr(info, "name", b"")).decode(errors="replace"),
    }
    try:
        arr = (pynvml.c_nvmlGpuInstancePlacement_t * 32)()
        count = ctypes.c_uint(len(arr))
        pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, info.id, arr, ctypes.byref(count))
        out["placements"] = [[arr[k].start, arr[k].size] for k in range(count.value)]
    except pynvml.NVMLError as e:
        out["placements_error"] = str(e)
    return out


def main() -> int:
    pynvml.nvmlInit()
    out: dict[str, Any] = {"driver": pynvml.nvmlSystemGetDriverVersion(), "devices": []}
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        basics = device_basics(pynvml, h)
        dev: dict[str, Any] = {"index": i, "name": basics.name, "memory_mib": basics.memory_mib}
        if basics.mig_current is not None:
            dev["mig_mode"] = {
                "current": int(basics.mig_current),
                "pending": int(basics.mig_pending),
            }
        dev["profiles"] = [_profile_row(h, row) for row in gpu_instance_profiles(pynvml, h)]
        model = find_model(basics.name)
        if model is not None:
            dev["catalog_model"] = model.name
            # Every NVML profile must have a catalog profile with the same size, count and starts.
            for row in dev["profiles"]:
                if "placements" not in row:
                    continue
                starts = [s for s, _ in row["placements"]]
                sizes = {z for _, z in row["placements"]}
                row["catalog_matches"] = [
                    p.name
                    for p in model.profiles
                    if list(p.starts) == starts
                    and sizes == {p.size}
                    and p.max_count == row["instance_count"]
                ]
            dev["all_profiles_match"] = all(
                r.get("catalog_matches") for r in dev["profiles"] if "placements" in r
            )
        out["devices"].append(dev)
    pynvml.nvmlShutdown()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
