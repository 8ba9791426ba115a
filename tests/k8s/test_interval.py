"""The long-running mode against the real API server: `gpu-allocator run --interval 1` as a
process of its own clears round after round (each reads the cluster afresh, records and applies
under the Lease), survives the API server going away for a while, and ends cleanly on SIGTERM;
its Prometheus metrics agree with the rounds it recorded."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_of_a_running_loop_equal_its_recorded_round(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    tmp_path: Path,
) -> None:
    """`run --interval --metrics-port` serves /metrics; after its first round (recorded, then
    a long wait) the scraped figures equal those of the round's AllocationRound."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    ns, _ = gpu_world.cluster(admin, 4)
    scheduler = f"metrics-{uuid.uuid4().hex[:6]}"
    gpu_world.pod(core, ns, "high", 3, "30", scheduler)
    gpu_world.pod(core, ns, "low", 3, "12", scheduler)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    log = tmp_path / "allocator.log"
    port = _free_port()
    argv = [sys.executable, "-m", "allocator.cli", "run", "--interval", "600"]
    argv += ["--kubeconfig", str(kubeconfig), "--lease", f"{ns}/allocator", "--solver", "greedy"]
    argv += ["--scheduler-name", scheduler, "--metrics-port", str(port)]
    argv += ["--metrics-address", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:

        def applied() -> Any:
            items = custom.list_namespaced_custom_object(
                "gpualloc.io", "v1alpha1", ns, "allocationrounds"
            )["items"]
            done = [r for r in items if r.get("status", {}).get("phase") == "Applied"]
            return done[0] if done else None

        record = _wait_for("a round recorded Applied", applied, proc, log, 60)
        # The loop hands the outcome to the metrics after the record is marked Applied.
        got = _wait_for(
            "the round in the metrics",
            lambda: (
                (m := _scrape(port)).get(("gpualloc_rounds_total", (("outcome", "applied"),))) and m
            ),
            proc,
            log,
            30,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    st = record["status"]

    def one(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert one("gpualloc_rounds_total", outcome="applied") == 1
    assert one("gpualloc_rounds_total", outcome="failed") == 0
    assert one("gpualloc_pending_bids") == st["bids"] == 2
    assert one("gpualloc_round_winners") == st["winners"]
    losers = sum(v for (n, _), v in got.items() if n == "gpualloc_round_losers")
    assert losers == st["bids"] - st["winners"]
    assert one("gpualloc_round_welfare") == pytest.approx(st["welfare"])
    assert one("gpualloc_round_revenue") == pytest.approx(st["revenue"])
    assert one("gpualloc_revenue_total") == pytest.approx(st["revenue"])
    assert one("gpualloc_bindings_total") == len(st["bindings"])
    assert one("gpualloc_preemptions_total") == len(st.get("evicted", []))
    prices = {dict(k)["model"]: v for (n, k), v in got.items() if n == "gpualloc_clearing_price"}
    assert prices == pytest.approx(st["clearingPrices"]) and prices
    shares = {dict(k)["model"]: v for (n, k), v in got.items() if n == "gpualloc_utilisation_ratio"}
    assert shares == pytest.approx(st["utilisation"])
    for phase in ("read", "solve", "payments", "apply"):
        assert one("gpualloc_round_phase_seconds_count", phase=phase) == 1
        seconds = one("gpualloc_round_phase_seconds_sum", phase=phase)
        assert seconds == pytest.approx(st["timing"][f"{phase}Ms"] / 1000.0, abs=1e-5)
    assert one("gpualloc_bind_wait_seconds_count") == st["winners"]
    assert 0 <= one("gpualloc_pending_wait_seconds") <= 600  # its pods were made just before
    for charge in st["charges"]:
        assert one("gpualloc_wallet_spend", wallet=charge["wallet"]) == pytest.approx(
            charge["amount"]
        )
        assert one("gpualloc_wallet_spent_total", wallet=charge["wallet"]) == pytest.approx(
            charge["amount"]
        )
