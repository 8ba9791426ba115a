"""The Prometheus metrics (allocator/cluster/metrics.py) and the chart's Grafana dashboard: the
dashboard is valid JSON whose every query names a metric the allocator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="the 'k8s' extra is not installed")
from prometheus_client import CollectorRegistry

from allocator.cluster.metrics import RoundMetrics

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "charts/gpu-allocator/dashboards/gpu-allocator.json"
)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported() -> set[str]:
    """Every series name the metrics expose (a counter as name_total, a histogram's parts)."""
    registry = CollectorRegistry()
    RoundMetrics(registry)
    return {f.name + end for f in registry.collect() for end in _SUFFIXES[f.type]}


def test_metric_names_follow_the_naming_guide() -> None:
    names = _exported()
    assert names and all(n.startswith("gpualloc_") for n in names)
    registry = CollectorRegistry()
    RoundMetrics(registry)
    for family in registry.collect():
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


def test_the_dashboard_loads_and_queries_only_exported_metrics() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 30
    exported = _exported()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for first in ("utilisation", "price", "wait", "rounds"):  # what a person opens first
        assert first in titles
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bgpualloc_[a-z0-9_]+", expr))
        assert names, f"a query without a gpualloc metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{expr}: not exported: {sorted(unknown)}"
        used |= names
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # Most of what is exported is on the dashboard (buckets stand for their histograms).
    assert len(used) >= 15
