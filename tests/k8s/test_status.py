"""`gpu-allocator status` against the real API server after a few recorded rounds: the rounds'
figures as their AllocationRounds keep them, prices, wallets and the pending bid with what the
allocator last told it; its table and its plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

from allocator.cli import main  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402

pytestmark = pytest.mark.k8s


def test_status_shows_the_rounds_made_prices_wallets_and_pending_bids(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 4)
    core = CoreV1Api(admin)
    import allocator.cluster.loop as loop
    import allocator.cluster.status as status

    view = gpu_world.only(ns, node)
    monkeypatch.setattr(loop, "fetch", view)
    monkeypatch.setattr(status, "fetch", view)
    gpu_world.pod(core, ns, "high", 3, "30")
    gpu_world.pod(core, ns, "low", 3, "12")
    options = greedy(record_namespace=ns)
    first = run_once(admin, options=options.replace(round_id="r-1"))
    gpu_world.pod(core, ns, "small", 1, "5")
    second = run_once(admin, options=options.replace(round_id="r-2"))
    assert [o.report.bound for o in (first, second) if o.report is not None] == [1, 1]

    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    plot = tmp_path / "rounds.png"
    args = ["status", "-n", ns, "--kubeconfig", str(kubeconfig)]
    assert main([*args, "--json", "--plot", str(plot)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"namespace", "rounds", "prices", "utilisation", "wallets", "pending"}
    assert [r["name"] for r in got["rounds"]] == ["r-2", "r-1"]  # newest first
    for row, outcome in zip(got["rounds"], (second, first), strict=True):
        result = outcome.result
        assert row["phase"] == "Applied" and row["payment_rule"] == result.payment_rule
        assert row["solver"] == result.solver == "greedy"
        assert row["bids"] == len(outcome.snapshot.problem.bids)
        assert row["winners"] == len(result.winners)
        assert row["welfare"] == pytest.approx(result.welfare)
        assert row["revenue"] == pytest.approx(result.revenue)
        assert row["clearing_prices"] == pytest.approx(dict(result.clearing_prices))
        assert row["utilisation"] == pytest.approx(dict(result.utilisation))
        assert set(row["timing_ms"]) == {"read", "solve", "payments", "apply"}
        assert all(v >= 0 for v in row["timing_ms"].values())
        assert row["timing_ms"]["solve"] == pytest.approx(result.stats["solve_ms"], abs=1e-3)
    assert got["prices"] == pytest.approx(
        {**dict(first.result.clearing_prices), **dict(second.result.clearing_prices)}
    )
    assert got["utilisation"] == pytest.approx(dict(second.result.utilisation))
    (wallet,) = got["wallets"]
    record = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "w"
    )
    assert wallet["name"] == f"{ns}/w" and wallet["balance"] == 50
    assert wallet["spent"] == pytest.approx(record["status"]["spent"])
    assert wallet["spent"] == pytest.approx(first.result.revenue + second.result.revenue)
    assert wallet["available"] == pytest.approx(50 - wallet["spent"])
    # The last round that charged it (a winner without competition pays the reserve, 0 here).
    assert wallet["last_round"] == ("r-2" if second.result.revenue > 0 else "r-1")
    (pending,) = got["pending"]
    assert pending["pods"] == [f"{ns}/low"] and pending["value"] == 12
    assert pending["reason"] in ("Outbid", "DoesNotFit") and "r-2" in pending["message"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(args) == 0
    text = capsys.readouterr().out
    for heading in ("Rounds in", "Models", "Wallets (1)", "Pending bids (1)"):
        assert heading in text
    assert "r-1" in text and "r-2" in text and f"{ns}/w" in text
