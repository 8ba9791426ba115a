"""The agents' end-to-end tests: a host cluster whose GPU nodes are kwok's, and agents each with
their own real control plane (etcd, kube-apiserver, vcluster's syncer) in a network namespace.

The lab (tests/harness/agentlab.py) needs root (network namespaces), the control plane of
scripts/build-controlplane and vcluster + kwok from scripts/build-agent-tools. Anything missing
skips these tests with the reason, or fails them under ``GPUALLOC_REQUIRE_K8S=1`` (CI).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "harness"))
import agentlab  # noqa: E402  (the harness folder is on sys.path only from here)
import network  # noqa: E402

REQUIRED = __import__("os").environ.get("GPUALLOC_REQUIRE_K8S") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason + "; GPUALLOC_REQUIRE_K8S=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[agentlab.Lab]:
    """The host (etcd, kube-apiserver, kwok) with the chart's CRDs, for the whole session."""
    pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
    bin_dir, vcluster, kwok, missing = agentlab.binaries()
    if missing:
        _unavailable(
            f"not built: {', '.join(str(p) for p in missing)} "
            "(scripts/build-controlplane, scripts/build-agent-tools; they need Go)"
        )
    why = network.can_make_namespaces()
    if why is not None:
        _unavailable(why)
    the_lab = agentlab.Lab(tmp_path_factory.mktemp("agentlab"), bin_dir, vcluster, kwok)
    try:
        the_lab.start()
        the_lab.install_crds()
        yield the_lab
    finally:
        the_lab.close()


def unique(prefix: str) -> str:
    """A name no other test of the session uses."""
    return f"{prefix}{uuid.uuid4().hex[:5]}"
