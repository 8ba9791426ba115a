"""Occupancy rules: what one GPU or one node holds, and whether more fits.

The single statement of the placement rules in Python (the C++ core has its own, and the checker
in :mod:`allocator.verify` keeps an independent one on purpose):

* a GPU offered ``whole`` takes whole-GPU work only; ``shared`` takes whole-GPU work (only while
  nothing else is on it) or shares of at most 1000 milli-GPU in all, counting ``used_milli`` held
  by work outside the market; ``mig`` takes MIG instances only;
* a MIG instance of a profile occupies the memory slices ``[start, start + size)``, starts only
  at one of the profile's legal slots (:attr:`~allocator.model.catalog.MigProfile.starts`), never
  overlaps another instance, a GPU holds at most ``max_count`` instances of each profile, and at
  most one ``+me`` (media) instance whatever its profile;
* a node's CPU (milli) and memory (MiB) in use never exceed its capacity.

:class:`GpuOccupancy` is one GPU's state, :class:`NodeOccupancy` one node's (CPU, memory and its
GPUs, made on first use). Both answer ``fits``/``why_not`` and change with ``take``/``release``;
``take`` is all or nothing, and ``release`` of what was taken restores the state exactly. A rule
broken is an :class:`OccupancyError` with the message :class:`~allocator.model.problem.Problem`
reports and the placement field it concerns. MIG slices are bitmasks: bit ``s`` is slice ``s``
(:func:`slice_mask`, :func:`starts_mask`).

Pure Python: no I/O, no solver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from allocator.model.catalog import GpuModel, MigProfile

if TYPE_CHECKING:  # only for annotations: problem.py imports this module
    from allocator.model.problem import Gpu, Node

__all__ = [
    "FULL_MILLI",
    "GpuOccupancy",
    "NodeOccupancy",
    "OccupancyError",
    "legal_starts",
    "slice_mask",
    "starts_mask",
]

#: Milli-GPU of one whole GPU: the shares on one GPU (with its ``used_milli``) add up to at most
#: this much.
FULL_MILLI = 1000

#: Placement kind -> the GPU modes that take it.
_MODES_FOR = {"whole": ("whole", "shared"), "share": ("shared",), "mig": ("mig",)}


class OccupancyError(ValueError):
    """A placement that does not fit.

    ``field`` is the field of a placement the rule concerns (``gpus``, ``milli``, or ``""`` for
    the MIG rules, which concern the placement as a whole); ``message`` says which rule broke.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def at(self, path: str) -> str:
        """``path`` to a placement, extended by :attr:`field` (``path.gpus``, or ``path``)."""
        return f"{path}.{self.field}" if self.field else path


def slice_mask(profile: MigProfile, start: int) -> int:
    """Bitmask of the memory slices an instance of ``profile`` at ``start`` occupies."""
    return ((1 << profile.size) - 1) << start


def starts_mask(profile: MigProfile) -> int:
    """Bitmask of the legal start slots of ``profile`` (bit ``s`` set: it may start at ``s``)."""
    mask = 0
    for s in profile.starts:
        mask |= 1 << s
    return mask


def legal_starts(model: GpuModel, profile: str) -> tuple[int, ...]:
    """The legal start slots of ``profile`` on ``model`` (empty if the model lacks it)."""
    p = model.profile(profile)
    return p.starts if p is not None else ()


@dataclass(init=False, eq=True, slots=True)
class GpuOccupancy:
    """What one GPU holds: a whole-GPU owner, milli-GPU of shares, or MIG instances.

    Parameters
    ----------
    model
        The GPU's model (its MIG geometry for ``mig`` mode).
    mode
        ``whole``, ``shared`` or ``mig`` (how the GPU is offered).
    node, index
        Where the GPU is; they only name it in error messages.
    used_milli
        Milli-GPU held by work outside the market (``shared``).
    mig_instances
        ``(profile, start)`` of MIG instances already on the GPU (held by work outside the
        market); taken in order with :meth:`take_mig`, so an illegal layout raises
        :class:`OccupancyError` here.
    layout
        ``(profile, start)`` of the MIG instances that exist on the GPU, when only those may be
        used (a GPU whose layout is kept); None: any legal instance may be carved.
    """

    model: GpuModel
    mode: str
    node: str
    index: int
    used_milli: int
    #: Id of the whole-GPU work on it, or None.
    owner: str | None
    #: Milli-GPU in use: ``used_milli``, shares, and 1000 while a whole-GPU owner holds it.
    milli: int
    #: Memory slices in use (bit ``s``: slice ``s``).
    slices: int
    #: ``+me`` instances on the GPU (0 or 1).
    media: int
    #: MIG instances as ``(profile, start)``, in the order taken.
    instances: tuple[tuple[str, int], ...]
    #: The only instances that may be taken (the GPU's kept layout), or None.
    layout: frozenset[tuple[str, int]] | None

    def __init__(
        self,
        model: GpuModel,
        mode: str,
        node: str = "",
        index: int = 0,
        used_milli: int = 0,
        mig_instances: Iterable[tuple[str, int]] = (),
        layout: Iterable[tuple[str, int]] | None = None,
    ) -> None:
        self.model = model
        self.layout = None if layout is None else frozenset(layout)
        self.mode = mode
        self.node = node
        self.index = index
        self.used_milli = used_milli
        self.owner = None
        self.milli = used_milli
        self.slices = 0
        self.media = 0
        self.instances = ()
        for name, start in mig_instances:
            self.take_mig(name, start)

    @classmethod
    def of(cls, gpu: Gpu, model: GpuModel, node: str = "") -> GpuOccupancy:
        """The occupancy of ``gpu`` (a :class:`~allocator.model.problem.Gpu` of ``model`` on
        ``node``) as offered: its ``used_milli`` and outside MIG instances; with a ``layout``,
        only the instances of that layout can be taken (running work sits on instances that
        exist)."""
        layout = None if gpu.layout is None else [(x.profile, x.start) for x in gpu.layout]
        occ = cls(model, gpu.mode, node, gpu.index, gpu.used_milli, layout=layout)
        if gpu.mig_instances:
            for x in gpu.mig_instances:
                occ.take_mig(x.profile, x.start)
        return occ

    def copy(self) -> GpuOccupancy:
        """An independent copy of the state (the model is shared)."""
        out = GpuOccupancy(self.model, self.mode, self.node, self.index, self.used_milli)
        out.layout = self.layout
        out.owner = self.owner
        out.milli = self.milli
        out.slices = self.slices
        out.media = self.media
        out.instances = self.instances
        return out

    # ------------------------------------------------------------------ queries
    def why_not(
        self, kind: str, *, milli: int = 0, profile: str | None = None, start: int | None = None
    ) -> OccupancyError | None:
        """Why one replica of ``kind`` (``whole``, ``share`` of ``milli``, or ``mig`` instance
        of ``profile`` at ``start``) does not fit on this GPU now, or None if it fits."""
        return self._why_not(kind, milli, profile or "", start or 0)

    def fits(
        self, kind: str, *, milli: int = 0, profile: str | None = None, start: int | None = None
    ) -> bool:
        """Whether one replica of ``kind`` fits on this GPU now (see :meth:`why_not`)."""
        return self.why_not(kind, milli=milli, profile=profile, start=start) is None

    def free_starts(self, profile: str) -> list[int]:
        """The legal starts of ``profile`` where an instance fits now, lowest first."""
        return [
            s
            for s in legal_starts(self.model, profile)
            if self.fits("mig", profile=profile, start=s)
        ]

    @property
    def free_milli(self) -> int:
        """Milli-GPU still free for shares (0 unless the GPU is ``shared``)."""
        if self.mode != "shared" or self.owner is not None:
            return 0
        return FULL_MILLI - self.milli

    def count(self, profile: str) -> int:
        """MIG instances of ``profile`` on the GPU."""
        return sum(1 for name, _ in self.instances if name == profile)

    # ------------------------------------------------------------------ changes
    def take(
        self,
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
        owner: str = "",
    ) -> None:
        """Place one replica of ``kind`` here (``owner`` names whole-GPU work in messages);
        :class:`OccupancyError` and no change if it does not fit."""
        name, slot = profile or "", start or 0
        err = self._why_not(kind, milli, name, slot)
        if err is not None:
            raise err
        self._apply(kind, milli, name, slot, owner)

    def take_mig(self, profile: str, start: int) -> None:
        """Add the MIG instance ``profile`` at ``start`` whatever the GPU's mode (the instances
        a GPU is offered with); :class:`OccupancyError` and no change if it breaks a MIG rule."""
        err = self._why_not_mig(profile, start)
        if err is not None:
            raise err
        self._apply("mig", 0, profile, start, "")

    def take_all(self, instances: Iterable[tuple[str, int]]) -> None:
        """:meth:`take_mig` each ``(profile, start)`` in turn."""
        for name, start in instances:
            self.take_mig(name, start)

    def _apply(self, kind: str, milli: int, profile: str, start: int, owner: str) -> None:
        """Record a replica that fits (checked by the caller)."""
        if kind == "whole":
            self.owner = owner
            self.milli = FULL_MILLI
        elif kind == "share":
            self.milli += milli
        else:
            p = self.model.profile(profile)
            assert p is not None  # checked by the caller
            self.slices |= slice_mask(p, start)
            self.media += p.media
            self.instances = (*self.instances, (profile, start))

    def release(
        self,
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
        owner: str | None = None,
    ) -> None:
        """Undo a :meth:`take` of the same arguments (``owner``: None matches any); ValueError
        if this GPU does not hold it."""
        if kind == "whole":
            if self.owner is None or (owner is not None and owner != self.owner):
                raise ValueError(f"{self._name()} is not held whole by {owner!r}")
            self.owner = None
            self.milli = self.used_milli
        elif kind == "share":
            if not 0 < milli <= self.milli - self.used_milli or self.owner is not None:
                raise ValueError(f"{self._name()} holds no share of {milli} milli")
            self.milli -= milli
        else:
            key = (profile or "", start or 0)
            if key not in self.instances:
                raise ValueError(f"{self._name()} holds no MIG instance {key[0]}@{key[1]}")
            p = self.model.profile(key[0])
            assert p is not None  # taken, so known
            at = self.instances.index(key)
            self.instances = self.instances[:at] + self.instances[at + 1 :]
            self.slices &= ~slice_mask(p, key[1])
            self.media -= p.media

    # ------------------------------------------------------------------ helpers
    def _name(self) -> str:
        return f"GPU {self.index} of {self.node!r}"

    def _why_not(self, kind: str, milli: int, profile: str, start: int) -> OccupancyError | None:
        """The rules in the order they are reported: mode, whole-GPU owner, then the kind's."""
        modes = _MODES_FOR.get(kind)
        if modes is None:
            raise ValueError(f"kind: must be whole, share or mig; got {kind!r}")
        if self.mode not in modes:
            return OccupancyError("gpus", f"a {kind} placement cannot use a {self.mode} GPU")
        if self.owner is not None:
            return OccupancyError("gpus", f"{self._name()} is already held by {self.owner!r}")
        if kind == "whole":
            if self.milli:
                return OccupancyError("gpus", f"{self._name()} is shared")
            return None
        if kind == "share":
            if milli < 1:
                raise ValueError(f"milli: a share takes at least 1 milli-GPU, got {milli}")
            if self.milli + milli > FULL_MILLI:
                return OccupancyError("milli", f"{self._name()} is over {FULL_MILLI} milli")
            return None
        return self._why_not_mig(profile, start)

    def _why_not_mig(self, profile: str, start: int) -> OccupancyError | None:
        """The MIG rules, in the order they are reported: profile, start slot, overlap, count
        of the profile, one ``+me`` instance."""
        model = self.model
        p = model.profile(profile)
        if p is None:
            return OccupancyError("", f"{model.name} has no MIG profile {profile!r}")
        if start not in p.starts:
            return OccupancyError(
                "",
                f"{profile} cannot start at slot {start} on {model.name} (legal: {list(p.starts)})",
            )
        if self.layout is not None and (p.name, start) not in self.layout:
            return OccupancyError(
                "", f"{profile}@{start} is not an instance of {self._name()}'s MIG layout"
            )
        if self.slices & slice_mask(p, start):
            return OccupancyError("", f"{profile}@{start} overlaps another instance")
        if self.count(p.name) >= p.max_count:
            return OccupancyError("", f"more than {p.max_count} instances of {p.name}")
        if p.media and self.media >= 1:
            return OccupancyError("", "at most one +me instance per GPU")
        return None


class NodeOccupancy:
    """What one node holds: CPU milli and memory MiB in use, and the state of its GPUs.

    Built from a :class:`~allocator.model.problem.Node` and the models of its GPUs' names
    (``models``: name or alias -> model); a GPU's :class:`GpuOccupancy` is made on first use
    (:meth:`gpu`). ``take_resources(..., strict=False)`` records use beyond the capacity (what a
    check of running work needs: it reports :attr:`cpu_over`/:attr:`memory_over` afterwards).
    """

    __slots__ = (
        "_gpus",
        "_models",
        "_specs",
        "cpu_milli",
        "memory_mib",
        "name",
        "used_cpu_milli",
        "used_memory_mib",
    )

    def __init__(self, node: Node, models: Mapping[str, GpuModel]) -> None:
        self.name = node.name
        #: Capacity of the node for this market.
        self.cpu_milli = node.cpu_milli
        self.memory_mib = node.memory_mib
        #: In use.
        self.used_cpu_milli = 0
        self.used_memory_mib = 0
        self._specs = node.gpus
        self._models = models
        self._gpus: dict[int, GpuOccupancy] = {}

    def gpu(self, index: int) -> GpuOccupancy | None:
        """The occupancy of GPU ``index`` (None if the node has no such GPU)."""
        occ = self._gpus.get(index)
        if occ is None:
            specs = self._specs
            spec: Gpu | None
            if 0 <= index < len(specs) and specs[index].index == index:
                spec = specs[index]  # GPUs are usually listed in index order
            else:
                spec = next((g for g in specs if g.index == index), None)
            if spec is None:
                return None
            occ = GpuOccupancy.of(spec, self._models[spec.model], self.name)
            self._gpus[index] = occ
        return occ

    # ------------------------------------------------------------------ CPU and memory
    def fits_resources(self, cpu_milli: int, memory_mib: int) -> bool:
        """Whether ``cpu_milli`` and ``memory_mib`` more fit on the node."""
        return (
            self.used_cpu_milli + cpu_milli <= self.cpu_milli
            and self.used_memory_mib + memory_mib <= self.memory_mib
        )

    def take_resources(self, cpu_milli: int, memory_mib: int, *, strict: bool = True) -> None:
        """Use ``cpu_milli`` and ``memory_mib`` more; with ``strict``, OccupancyError and no
        change unless they fit."""
        if strict and not self.fits_resources(cpu_milli, memory_mib):
            raise OccupancyError(
                "",
                f"{self.name!r} has {self.cpu_milli - self.used_cpu_milli} CPU milli and "
                f"{self.memory_mib - self.used_memory_mib} MiB free; "
                f"{cpu_milli} and {memory_mib} do not fit",
            )
        self.used_cpu_milli += cpu_milli
        self.used_memory_mib += memory_mib

    def release_resources(self, cpu_milli: int, memory_mib: int) -> None:
        """Undo :meth:`take_resources`; ValueError if more is released than is in use."""
        if cpu_milli > self.used_cpu_milli or memory_mib > self.used_memory_mib:
            raise ValueError(
                f"{self.name!r} does not use {cpu_milli} CPU milli and {memory_mib} MiB"
            )
        self.used_cpu_milli -= cpu_milli
        self.used_memory_mib -= memory_mib

    @property
    def cpu_over(self) -> bool:
        """Whether more CPU is in use than the node has."""
        return self.used_cpu_milli > self.cpu_milli

    @property
    def memory_over(self) -> bool:
        """Whether more memory is in use than the node has."""
        return self.used_memory_mib > self.memory_mib

    # ------------------------------------------------------------------ placements
    def why_not(
        self,
        gpus: Iterable[int],
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
    ) -> OccupancyError | None:
        """Why one replica on GPUs ``gpus`` (distinct indices; one for ``share`` and ``mig``)
        does not fit now, or None; the first GPU in order that refuses it is reported."""
        for index in gpus:
            occ = self.gpu(index)
            if occ is None:
                return OccupancyError("gpus", f"node {self.name!r} has no GPU {index}")
            err = occ.why_not(kind, milli=milli, profile=profile, start=start)
            if err is not None:
                return err
        return None

    def fits(
        self,
        gpus: Iterable[int],
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
    ) -> bool:
        """Whether one replica on GPUs ``gpus`` fits now (CPU and memory not included)."""
        return self.why_not(gpus, kind, milli=milli, profile=profile, start=start) is None

    def take(
        self,
        gpus: Iterable[int],
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
        owner: str = "",
    ) -> None:
        """Place one replica on GPUs ``gpus`` (distinct indices), all or nothing:
        OccupancyError and no change unless it fits on every one of them."""
        name, slot = profile or "", start or 0
        indices = gpus if isinstance(gpus, tuple) else tuple(gpus)
        for index in indices:
            occ = self._gpus.get(index) or self.gpu(index)
            if occ is None:
                raise OccupancyError("gpus", f"node {self.name!r} has no GPU {index}")
            err = occ._why_not(kind, milli, name, slot)
            if err is not None:
                raise err
        for index in indices:
            self._gpus[index]._apply(kind, milli, name, slot, owner)

    def release(
        self,
        gpus: Iterable[int],
        kind: str,
        *,
        milli: int = 0,
        profile: str | None = None,
        start: int | None = None,
        owner: str | None = None,
    ) -> None:
        """Undo a :meth:`take` of the same arguments; ValueError if it was not taken."""
        for index in gpus:
            occ = self.gpu(index)
            if occ is None:
                raise ValueError(f"node {self.name!r} has no GPU {index}")
            occ.release(kind, milli=milli, profile=profile, start=start, owner=owner)
