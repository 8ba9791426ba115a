"""Read-only NVML check of the MIG catalog against a real GPU.

Prints JSON: the device name, memory, MIG mode, and for every GPU-instance profile NVML reports
(only when MIG mode is on) its slice count, instance count and possible placements, compared to
``allocator.CATALOG``. It never changes MIG mode or creates instances.

    python scripts/nvml_mig_check.py > mig_check.json
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

import pynvml

from allocator.model import CATALOG


def _profile_rows(handle: Any) -> list[dict[str, Any]]:
    rows = []
    for pid in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, pid)
        except pynvml.NVMLError as e:
            rows.append({"profile_index": pid, "error": str(e)})
            continue
        row: dict[str, Any] = {
            "profile_index": pid,
            "id": info.id,
            "slice_count": info.sliceCount,
            "instance_count": info.instanceCount,
            "memory_mb": info.memorySizeMB,
            "multiprocessors": info.multiprocessorCount,
        }
        try:
            arr = (pynvml.c_nvmlGpuInstancePlacement_t * 32)()
            count = ctypes.c_uint(len(arr))
            pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                handle, info.id, arr, ctypes.byref(count)
            )
            row["placements"] = [[arr[k].start, arr[k].size] for k in range(count.value)]
        except pynvml.NVMLError as e:
            row["placements_error"] = str(e)
        rows.append(row)
    return rows


def main() -> int:
    pynvml.nvmlInit()
    out: dict[str, Any] = {"driver": pynvml.nvmlSystemGetDriverVersion(), "devices": []}
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        dev: dict[str, Any] = {
            "index": i,
            "name": pynvml.nvmlDeviceGetName(h),
            "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024),
        }
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(h)
            dev["mig_mode"] = {"current": current, "pending": pending}
        except pynvml.NVMLError as e:
            dev["mig_mode_error"] = str(e)
        dev["profiles"] = _profile_rows(h)
        name = str(dev["name"]).replace("NVIDIA ", "")
        model = CATALOG.get(name) or CATALOG.get(name.replace(" ", "-"))
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
