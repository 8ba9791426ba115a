"""Trace loaders: the Alibaba openb node and pod lists, by path or by short name.

The openb format (``cluster-trace-gpu-v2023``, used by the FGD paper) is two CSV files: nodes
``sn,cpu_milli,memory_mib,gpu,model`` and pods ``name,cpu_milli,memory_mib,num_gpu,gpu_milli``
plus, in most variants, ``gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time``.
``gpu_milli`` is per GPU (below 1000 only for a share of one GPU); ``gpu_spec`` lists the allowed
models separated by ``|`` (empty: any). Bad rows raise :class:`TraceError` naming file, line and
column.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "OPENB_TRACES",
    "ClusterTrace",
    "PodTrace",
    "TraceError",
    "data_dir",
    "load_openb_nodes",
    "load_openb_pods",
    "resolve_trace",
]

#: Short names of the openb pod lists shipped in ``shared/data/openb`` (file stem after
#: ``openb_pod_list_``).
OPENB_TRACES = (
    "default",
    "gpushare20",
    "gpushare40",
    "gpushare60",
    "gpushare80",
    "gpushare100",
    "multigpu20",
    "multigpu30",
    "multigpu40",
)


class TraceError(ValueError):
    """A trace file that cannot be read: names the file, line and column."""


def data_dir() -> Path:
    """Folder of the shared traces: ``$GPUALLOC_DATA``, else ``shared/data`` beside the project.

    The project's checkout sits next to ``shared/`` (``../shared/data`` from the repository
    root); the search walks up from the working directory and from this file.
    """
    env = os.environ.get("GPUALLOC_DATA")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise TraceError(
        "trace data not found: set GPUALLOC_DATA to the folder holding openb/ and spot-gpu/"
    )


def resolve_trace(name: str) -> tuple[Path, Path]:
    """(nodes CSV, pods CSV) of a short trace name such as ``openb-default``."""
    prefix = "openb-"
    variant = name[len(prefix) :] if name.startswith(prefix) else ""
    if variant not in OPENB_TRACES:
        known = ", ".join(prefix + v for v in OPENB_TRACES)
        raise TraceError(f"trace: unknown name {name!r} (known: {known})")
    folder = data_dir() / "openb"
    return folder / "openb_node_list_gpu_node.csv", folder / f"openb_pod_list_{variant}.csv"


@dataclass(frozen=True)
class ClusterTrace:
    """Nodes of a trace as columns; ``model`` indexes ``models`` (-1: no GPU)."""

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    gpus: np.ndarray
    model: np.ndarray
    models: tuple[str, ...]

    @property
    def total_gpus(self) -> int:
        return int(self.gpus.sum())


@dataclass(frozen=True)
class PodTrace:
    """Pods of a trace as columns. ``models`` is a bitmask over the cluster's models (0: any);
    ``creation``/``deletion`` are seconds (NaN when the file has none)."""

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    gpus: np.ndarray
    milli: np.ndarray
    models: np.ndarray
    qos: tuple[str, ...]
    creation: np.ndarray
    deletion: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    @property
    def gpu_milli_total(self) -> np.ndarray:
        """Requested milli-GPU per pod (GPUs x milli per GPU)."""
        return np.asarray(self.gpus * self.milli, dtype=np.int64)

    def take(self, index: np.ndarray) -> PodTrace:
        """The pods at ``index`` (in that order; repeats allowed)."""
        idx = np.asarray(index, dtype=np.int64)
        return PodTrace(
            names=tuple(self.names[i] for i in idx),
            cpu_milli=self.cpu_milli[idx],
            memory_mib=self.memory_mib[idx],
            gpus=self.gpus[idx],
            milli=self.milli[idx],
            models=self.models[idx],
            qos=tuple(self.qos[i] for i in idx),
            creation=self.creation[idx],
            deletion=self.deletion[idx],
        )


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise TraceError(f"{path}: missing column(s) {', '.join(missing)}")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from exc


def _int(path: Path, line: int, row: dict[str, str], col: str, low: int, high: int) -> int:
    raw = (row.get(col) or "").strip()
    try:
        value = int(float(raw)) if raw else 0
    except ValueError:
        raise TraceError(f"{path}:{line}: {col}: not a number: {raw!r}") from None
    if not low <= value <= high:
        raise TraceError(f"{path}:{line}: {col}: {value} outside [{low}, {high}]")
    return value


def _time(path: Path, line: int, row: dict[str, str], col: str) -> float:
    raw = (row.get(col) or "").strip()
    if not raw:
        return float("nan")
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(f"{path}:{line}: {col}: not a number: {raw!r}") from None
    if value != value or value < 0:
        raise TraceError(f"{path}:{line}: {col}: must be a time >= 0")
    return value


def load_openb_nodes(path: str | Path) -> ClusterTrace:
    """Read an openb node list (``sn,cpu_milli,memory_mib,gpu,model``)."""
    path = Path(path)
    rows = _rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model"))
    if not rows:
        raise TraceError(f"{path}: no nodes")
    models: list[str] = []
    names, cpu, mem, gpus, model = [], [], [], [], []
    seen: set[str] = set()
    for line, row in rows:
        name = (row["sn"] or "").strip()
        if not name or name in seen:
            raise TraceError(f"{path}:{line}: sn: empty or duplicate node name {name!r}")
        seen.add(name)
        count = _int(path, line, row, "gpu", 0, 64)
        kind = (row["model"] or "").strip()
        if count and not kind:
            raise TraceError(f"{path}:{line}: model: a node with GPUs needs a model")
        if count and kind not in models:
            models.append(kind)
        names.append(name)
        cpu.append(_int(path, line, row, "cpu_milli", 0, 10**9))
        mem.append(_int(path, line, row, "memory_mib", 0, 10**12))
        gpus.append(count)
        model.append(models.index(kind) if count else -1)
    if len(models) > 64:
        raise TraceError(f"{path}: more than 64 GPU models")
    return ClusterTrace(
        names=tuple(names),
        cpu_milli=np.array(cpu, dtype=np.int64),
        memory_mib=np.array(mem, dtype=np.int64),
        gpus=np.array(gpus, dtype=np.int64),
        model=np.array(model, dtype=np.int64),
        models=tuple(models),
    )


def load_openb_pods(path: str | Path, cluster: ClusterTrace) -> PodTrace:
    """Read an openb pod list; ``gpu_spec`` models are resolved against ``cluster``.

    A pod whose ``gpu_spec`` names only models the cluster lacks keeps an impossible mask (bit
    63) so that it fails rather than running anywhere.
    """
    path = Path(path)
    rows = _rows(path, ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"))
    names, cpu, mem, gpus, milli, masks, qos, created, deleted = ([] for _ in range(9))
    for line, row in rows:
        name = (row["name"] or "").strip()
        if not name:
            raise TraceError(f"{path}:{line}: name: empty")
        n_gpu = _int(path, line, row, "num_gpu", 0, 64)
        per = _int(path, line, row, "gpu_milli", 0, 10**6)
        if n_gpu == 0:
            per = 0
        else:
            per = min(per, 1000)  # the authors' converter caps a share at a whole GPU
            if per == 0:
                raise TraceError(f"{path}:{line}: gpu_milli: 0 for a pod with GPUs")
            if n_gpu > 1 and per != 1000:
                raise TraceError(f"{path}:{line}: gpu_milli: a multi-GPU pod must take them whole")
        mask = 0
        spec = (row.get("gpu_spec") or "").strip()
        if spec and n_gpu:
            for part in spec.split("|"):
                part = part.strip()
                if part in cluster.models:
                    mask |= 1 << cluster.models.index(part)
            if mask == 0:
                mask = 1 << 63
        names.append(name)
        cpu.append(_int(path, line, row, "cpu_milli", 0, 10**9))
        mem.append(_int(path, line, row, "memory_mib", 0, 10**12))
        gpus.append(n_gpu)
        milli.append(per)
        masks.append(mask)
        qos.append((row.get("qos") or "").strip())
        created.append(_time(path, line, row, "creation_time"))
        deleted.append(_time(path, line, row, "deletion_time"))
    return PodTrace(
        names=tuple(names),
        cpu_milli=np.array(cpu, dtype=np.int64),
        memory_mib=np.array(mem, dtype=np.int64),
        gpus=np.array(gpus, dtype=np.int64),
        milli=np.array(milli, dtype=np.int64),
        models=np.array(masks, dtype=np.uint64),
        qos=tuple(qos),
        creation=np.array(created, dtype=np.float64),
        deletion=np.array(deleted, dtype=np.float64),
    )
