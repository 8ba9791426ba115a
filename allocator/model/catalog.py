"""GPU catalog: models, their memory and, for MIG-capable ones, profiles and legal placements.

Facts come from NVIDIA's MIG user guide ("Supported MIG Profiles") and mig-parted's default
configuration; see ``../shared/reference/mig.md`` in the project workspace and ``docs/catalog.md``.
The placement unit count (memory slices) is data of each model, never a constant in code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from allocator.model.errors import ProblemError

__all__ = ["CATALOG", "GpuModel", "MigProfile", "find_model", "whole_gpu_model"]


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One MIG GPU-instance profile of one GPU model.

    Parameters
    ----------
    name
        NVIDIA's name, e.g. ``"3g.40gb"`` or ``"1g.10gb+me"``.
    compute
        Compute slices (the ``g`` number).
    size
        Memory slices occupied, i.e. the placement size: the instance occupies
        ``[start, start + size)``.
    starts
        Legal start slots.
    max_count
        Most instances of this profile on one GPU.
    media
        True for ``+me`` profiles (at most one ``+me`` instance per GPU, whatever its profile).
    memory_gb
        Memory of the instance in GB as NVIDIA names it.
    """

    name: str
    compute: int
    size: int
    starts: tuple[int, ...]
    max_count: int
    media: bool = False
    memory_gb: float = 0.0


@dataclass(frozen=True, slots=True)
class GpuModel:
    """A GPU model: name, memory and (if MIG-capable) its MIG geometry.

    ``mig_units`` is the number of memory slices (placement units); 0 means not MIG-capable.
    ``compute_units`` is the number of compute slices of the full GPU (7 on A100/H100).
    ``whole_equivalent`` is the GPU-equivalents one whole device of this model stands for: 1 for
    a GPU, less for a MIG instance offered as a device of its own (Kubernetes' static MIG
    instances: compute slices / all compute), so that such bids rank, price and count as the
    share of a GPU they are.
    """

    name: str
    memory_gb: float
    mig_units: int = 0
    compute_units: int = 0
    profiles: tuple[MigProfile, ...] = ()
    aliases: tuple[str, ...] = ()
    whole_equivalent: float = 1.0
    _by_name: Mapping[str, MigProfile] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ProblemError("name", "a GPU model needs a non-empty name")
        if not (math.isfinite(self.memory_gb) and self.memory_gb > 0):
            raise ProblemError("memory_gb", f"must be a positive number, got {self.memory_gb!r}")
        if not (
            isinstance(self.whole_equivalent, int | float)
            and not isinstance(self.whole_equivalent, bool)
            and math.isfinite(self.whole_equivalent)
            and self.whole_equivalent > 0
        ):
            raise ProblemError(
                "whole_equivalent", f"must be a positive number, got {self.whole_equivalent!r}"
            )
        if self.mig_units < 0 or (self.mig_units == 0) != (not self.profiles):
            raise ProblemError("mig_units", "MIG profiles need mig_units > 0 and vice versa")
        if self.mig_units and self.compute_units <= 0:
            raise ProblemError("compute_units", "a MIG-capable model needs compute_units > 0")
        for p in self.profiles:
            for s in p.starts:
                if s < 0 or s + p.size > self.mig_units:
                    raise ProblemError(
                        f"profiles.{p.name}.starts",
                        f"start {s} + size {p.size} exceeds {self.mig_units} units",
                    )
        object.__setattr__(self, "_by_name", MappingProxyType({p.name: p for p in self.profiles}))

    @property
    def mig_capable(self) -> bool:
        """Whether the model can be partitioned with MIG."""
        return self.mig_units > 0

    def profile(self, name: str) -> MigProfile | None:
        """The profile called ``name`` on this model, or None."""
        return self._by_name.get(name)

    def gpu_equivalent(self, profile: MigProfile) -> float:
        """Share of the whole GPU a MIG instance stands for (compute slices / all compute)."""
        return profile.compute / self.compute_units


def _table(
    names: tuple[str, str | None, str, str, str, str, str],
    one: float,
    double: float,
    half: float,
    full: float,
) -> tuple[MigProfile, ...]:
    """The 8-slice table from explicit names (1g, 1g+me, 1g-double, 2g, 3g, 4g, 7g)."""
    p1, p1me, p1d, p2, p3, p4, p7 = names
    out = [
        MigProfile(p1, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7, False, one),
        MigProfile(p1d, 1, 2, (0, 2, 4, 6), 4, False, double),
        MigProfile(p2, 2, 2, (0, 2, 4), 3, False, double),
        MigProfile(p3, 3, 4, (0, 4), 2, False, half),
        MigProfile(p4, 4, 4, (0,), 1, False, half),
        MigProfile(p7, 7, 8, (0,), 1, False, full),
    ]
    if p1me is not None:
        out.insert(1, MigProfile(p1me, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1, True, one))
    return tuple(out)


_A100_40 = _table(
    ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"), 5, 10, 20, 40
)
_X_80 = _table(
    ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"), 10, 20, 40, 80
)
_H100_94 = _table(
    ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"), 12, 24, 47, 94
)
_H100_96 = _table(
    ("1g.12gb", None, "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"), 12, 24, 48, 96
)
_H200 = _table(
    ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    18,
    35,
    71,
    141,
)
_B200 = _table(
    ("1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
    23,
    45,
    90,
    180,
)
_A30 = (
    MigProfile("1g.6gb", 1, 1, (0, 1, 2, 3), 4, False, 6),
    MigProfile("1g.6gb+me", 1, 1, (0, 1, 2, 3), 1, True, 6),
    MigProfile("2g.12gb", 2, 2, (0, 2), 2, False, 12),
    MigProfile("2g.12gb+me", 2, 2, (0, 2), 1, True, 12),
    MigProfile("4g.24gb", 4, 4, (0,), 1, False, 24),
)


def _mig(name: str, memory: float, table: tuple[MigProfile, ...], *aliases: str) -> GpuModel:
    units = 4 if table is _A30 else 8
    compute = 4 if table is _A30 else 7
    return GpuModel(name, memory, units, compute, table, tuple(aliases))


def whole_gpu_model(
    name: str, memory_gb: float, *aliases: str, whole_equivalent: float = 1.0
) -> GpuModel:
    """A model that is only ever allocated whole or shared (no MIG)."""
    return GpuModel(name, memory_gb, aliases=tuple(aliases), whole_equivalent=whole_equivalent)


_MODELS: tuple[GpuModel, ...] = (
    _mig("A100-SXM4-40GB", 40, _A100_40, "A100-40GB", "A100-PCIE-40GB"),
    _mig("A100-SXM4-80GB", 80, _X_80, "A100-80GB", "A100-PCIE-80GB"),
    _mig("A800-SXM4-80GB", 80, _X_80, "A800", "A800-80GB"),
    _mig(
        "H100-80GB",
        80,
        _X_80,
        "H100",
        "H100-SXM5-80GB",
        "H100-80GB-HBM3",
        "NVIDIA-H100-80GB-HBM3",
        "H100-PCIe",
    ),
    _mig("H800", 80, _X_80, "H800-80GB"),
    _mig("H100-94GB", 94, _H100_94, "H100-NVL"),
    _mig("H100-96GB", 96, _H100_96, "GH200"),
    _mig("H200-141GB", 141, _H200, "H200", "NVIDIA-H200"),
    _mig("B200-180GB", 180, _B200, "B200"),
    _mig("A30-24GB", 24, _A30, "A30"),
    whole_gpu_model("T4", 16, "Tesla-T4"),
    whole_gpu_model("V100-16GB", 16, "V100M16", "V100-SXM2-16GB"),
    whole_gpu_model("V100-32GB", 32, "V100M32", "V100-SXM2-32GB"),
    whole_gpu_model("P100", 16, "P100-16GB"),
    whole_gpu_model("A10", 24, "A10-24GB"),
    whole_gpu_model("L4", 24),
    whole_gpu_model("L40S", 48),
)

#: Built-in models by canonical name and by alias. Problems may add unknown whole-GPU models.
CATALOG: Mapping[str, GpuModel] = MappingProxyType(
    {key: m for m in _MODELS for key in (m.name, *m.aliases)}
)


#: Vendor prefixes of product names as NVML and GPU Feature Discovery print them
#: (``NVIDIA A100-SXM4-80GB`` / ``NVIDIA-A100-SXM4-80GB``, ``Tesla T4`` / ``Tesla-T4``).
_VENDOR_PREFIXES = ("NVIDIA-", "Tesla-")


def find_model(product: str) -> GpuModel | None:
    """The catalog model of a product name, or None if the catalog does not know it.

    Accepts the catalog's names and aliases, also as NVML and GPU Feature Discovery write them:
    with a vendor prefix (``NVIDIA-``, ``Tesla-``) and with spaces for dashes, e.g.
    ``NVIDIA-A100-SXM4-80GB``, ``NVIDIA H100 80GB HBM3`` or ``Tesla-T4``.
    """
    key = "-".join(product.split())
    if key in CATALOG:
        return CATALOG[key]
    for prefix in _VENDOR_PREFIXES:
        if key.startswith(prefix) and key[len(prefix) :] in CATALOG:
            return CATALOG[key[len(prefix) :]]
    return None
