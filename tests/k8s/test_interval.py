"""The long-running mode against the real API server: `gpu-allocator run --interval 1` as a
process of its own clears round after round (each reads the cluster afresh, records and applies
under the Lease), survives the API server going away for a while, and ends cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402

pytestmark = pytest.mark.k8s
REPO = Path(__file__).resolve().parents[2]


def _wait_for(what: str, probe: Callable[[], Any], proc: Any, log: Path, timeout_s: float) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the allocator's log if the
    process exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"allocator exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"no {what} after {timeout_s:.0f} s; allocator log:\n{log.read_text()}")


def test_interval_mode_clears_rounds_until_sigterm(
    api_client: Callable[[str], Any],
    control_plane: Any,
    control_plane_processes: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    tmp_path: Path,
) -> None:
    """A pod pending before the start is bound in one round; the API server is then stopped
    (the rounds meanwhile fail, are logged, and the process keeps going) and restarted; a pod
    created after that is bound by a later round. Both binding rounds are recorded Applied
    (rounds with nothing to bind are not recorded), and SIGTERM ends the process with exit 0."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, _ = gpu_world.cluster(admin, 4)
    # A scheduler name of its own: no other test's pending pod is a bid of these rounds.
    scheduler = f"interval-{uuid.uuid4().hex[:6]}"
    gpu_world.pod(core, ns, "first", 1, "5", scheduler)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    log = tmp_path / "allocator.log"
    argv = [sys.executable, "-m", "allocator.cli", "run", "--interval", "1"]
    argv += ["--kubeconfig", str(kubeconfig), "--lease", f"{ns}/allocator", "--solver", "greedy"]
    argv += ["--scheduler-name", scheduler, "--time-limit", "5"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:

        def node_of(name: str) -> Any:
            return core.read_namespaced_pod(name, ns).spec.node_name

        _wait_for("the first pod bound", lambda: node_of("first"), proc, log, 60)

        control_plane_processes.stop_apiserver()
        try:
            _wait_for(
                "a failed round logged",
                lambda: "failed; the next round starts afresh" in log.read_text(),
                proc,
                log,
                60,
            )
        finally:
            control_plane_processes.start_apiserver()

        gpu_world.pod(core, ns, "second", 1, "5", scheduler)
        _wait_for("the second pod bound", lambda: node_of("second"), proc, log, 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGTERM: stopping after this round" in text and "stopped after" in text
    assert "Traceback" in text  # the failed rounds, logged with their cause

    rounds = CustomObjectsApi(admin).list_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "allocationrounds"
    )["items"]
    recorded = sorted(
        (r["metadata"]["name"], r["status"]["phase"], [b["pod"] for b in r["status"]["bindings"]])
        for r in rounds
    )
    assert [(phase, pods) for _, phase, pods in recorded] == [
        ("Applied", [f"{ns}/first"]),
        ("Applied", [f"{ns}/second"]),
    ], text
    for (round_id, _, _), name in zip(recorded, ("first", "second"), strict=True):
        pod = core.read_namespaced_pod(name, ns)
        assert pod.metadata.annotations["gpualloc.io/round"] == round_id
    won = {
        e.involved_object.name for e in core.list_namespaced_event(ns).items if e.reason == "Won"
    }
    assert won == {"first", "second"}
