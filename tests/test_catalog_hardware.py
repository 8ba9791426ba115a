"""The MIG catalog against what NVML reported on a real GPU (recorded on the device machine).

`docs/hardware/h200-nvml-mig.json` was written by `scripts/nvml_mig_check.py` on an NVIDIA H200
(driver 580.159.04, MIG mode off, read-only queries). NVML's profile indices 7 and 8 are the
``REV1`` (media extensions, ``+me``) variants.
"""

from __future__ import annotations

import json
from pathlib import Path

from allocator.model import CATALOG, find_model

RECORD = Path(__file__).resolve().parent.parent / "docs" / "hardware" / "h200-nvml-mig.json"
MEDIA_INDICES = {7, 8}


def test_h200_catalog_matches_nvml_placements() -> None:
    """Every H200 profile NVML reports has one catalog twin: compute, size, starts, count, +me."""
    device = json.loads(RECORD.read_text(encoding="utf-8"))["devices"][0]
    assert device["name"] == "NVIDIA H200"
    model = CATALOG["H200"]
    assert find_model(device["name"]) is model  # NVML's own name finds the catalog entry
    reported = [r for r in device["profiles"] if "placements" in r]
    assert len(reported) == len(model.profiles) == 7
    for row in reported:
        starts = tuple(start for start, _ in row["placements"])
        sizes = {size for _, size in row["placements"]}
        twins = [
            p
            for p in model.profiles
            if p.compute == row["slice_count"]
            and sizes == {p.size}
            and p.starts == starts
            and p.max_count == row["instance_count"]
            and p.media == (row["profile_index"] in MEDIA_INDICES)
        ]
        assert len(twins) == 1, row
    # The whole GPU is 8 memory slices and 7 compute slices, as the catalog says.
    full = max(reported, key=lambda r: r["slice_count"])
    assert full["placements"] == [[0, model.mig_units]]
    assert full["slice_count"] == model.compute_units
