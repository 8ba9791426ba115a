"""One round against the real API server: winners bound through the Binding subresource with their
GPUs annotated, wallets debited once per round id (a repeated apply charges nothing twice),
events emitted, and a dry run writes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

from allocator.agent import WorkloadSpec  # noqa: E402
from allocator.cli import main  # noqa: E402
from allocator.cluster import api as cluster_api  # noqa: E402
from allocator.cluster.api import apply_plan, record_round  # noqa: E402
from allocator.cluster.loop import run_once  # noqa: E402
from allocator.cluster.options import RoundOptions  # noqa: E402
from allocator.cluster.plan import Binding, Plan  # noqa: E402
from allocator.solvers import SolveParams  # noqa: E402

pytestmark = pytest.mark.k8s


def test_round_binds_winners_and_charges_once(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """Two pods want 3 of 4 GPUs each: the higher bid is bound with its GPUs annotated and the
    wallet pays the critical price once, even when the plan is applied again."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 4)
    core = CoreV1Api(admin)
    gpu_world.pod(core, ns, "high", 3, "30")
    gpu_world.pod(core, ns, "low", 3, "12")
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    dry = run_once(admin, options=greedy(round_id="r-dry", dry_run=True))
    assert dry.report is None and len(dry.plan.bindings) == 1
    assert core.read_namespaced_pod("high", ns).spec.node_name is None  # nothing written

    out = run_once(admin, options=greedy(round_id="r-1"))
    assert out.report is not None and out.report.bound == 1 and out.report.problems == []
    pod = core.read_namespaced_pod("high", ns)
    assert pod.spec.node_name == node
    assert pod.metadata.annotations["gpualloc.io/gpus"] == "0,1,2"
    assert core.read_namespaced_pod("low", ns).spec.node_name is None
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "w"
    )
    # Critical price: the loser's bid of 12 for the same 3 GPUs.
    assert wallet["status"]["spent"] == pytest.approx(12.0)
    assert [e["round"] for e in wallet["status"]["ledger"]] == ["r-1"]

    again = apply_plan(admin, out.plan)  # a crash-and-retry of the same round
    assert again.bound == 0 and again.already_bound == 1 and again.already_charged == 1
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "w"
    )
    assert wallet["status"]["spent"] == pytest.approx(12.0)
    reasons = {e.reason for e in core.list_namespaced_event(ns).items}
    assert {"Won", "DoesNotFit"} <= reasons or {"Won", "Outbid"} <= reasons

    # Repeats update one Event per pod and reason (count, message, time), as kubectl aggregates
    # them: the re-apply said everything a second time, and a new round tells the loser again.
    def events_of(pod: str) -> list[Any]:
        selector = f"involvedObject.name={pod},involvedObject.kind=Pod"
        return list(core.list_namespaced_event(ns, field_selector=selector).items)

    (won,) = events_of("high")
    assert (won.reason, won.count) == ("Won", 2)
    (lost,) = events_of("low")
    assert lost.count == 2 and lost.reason in ("DoesNotFit", "Outbid")
    assert lost.source.component == "gpu-allocator" and lost.type == "Warning"
    later = run_once(admin, options=greedy(round_id="r-2"))
    assert later.report is not None and later.report.problems == []
    (lost,) = events_of("low")
    assert lost.count == 3 and "r-2" in lost.message, lost.message
    assert lost.last_timestamp >= lost.first_timestamp
    # The next apply finds it in one list call (by source), not by a failed create.
    assert cluster_api._our_events(core)[(ns, lost.metadata.name)] == 3


def test_run_cli_dry_run_prints_the_plan(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """`gpu-allocator run --once --dry-run --dump-snapshot` prints the plan, writes the Problem
    JSON and binds nothing."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 2)
    core = CoreV1Api(admin)
    gpu_world.pod(core, ns, "p", 1, "5")
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    snap = tmp_path / "snap.json"
    code = main(
        [
            "run",
            "--once",
            "--dry-run",
            "--kubeconfig",
            str(kubeconfig),
            "--solver",
            "greedy",
            "--dump-snapshot",
            str(snap),
            "--round-id",
            "r-cli",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"bind {ns}/p -> {node}" in out
    assert snap.exists() and main(["solve", str(snap), "--solver", "greedy"]) == 0
    assert core.read_namespaced_pod("p", ns).spec.node_name is None


def test_lease_lets_one_writer_at_a_time(
    api_client: Callable[[str], Any], control_plane: Any, gpualloc_crds: Any
) -> None:
    """Of two runs, only the Lease holder may write until the lease expires; then the other can
    take it over; the holder renews its own."""
    import datetime as dt

    from allocator.cluster.api import acquire_lease

    admin = api_client(control_plane.admin_token)
    ns = f"lease-{uuid.uuid4().hex[:6]}"
    CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    t0 = dt.datetime.now(dt.UTC)
    assert acquire_lease(admin, ns, "gpu-allocator", "run-a", 60, now=t0)
    assert not acquire_lease(admin, ns, "gpu-allocator", "run-b", 60, now=t0)
    assert acquire_lease(admin, ns, "gpu-allocator", "run-a", 60, now=t0)  # renew
    from allocator.cluster.api import release_lease

    assert not release_lease(admin, ns, "gpu-allocator", "run-b")  # not b's to give up
    later = t0 + dt.timedelta(seconds=120)
    assert acquire_lease(admin, ns, "gpu-allocator", "run-b", 60, now=later)  # a's expired
    assert not acquire_lease(admin, ns, "gpu-allocator", "run-a", 60, now=later)
    assert release_lease(admin, ns, "gpu-allocator", "run-b")
    assert acquire_lease(admin, ns, "gpu-allocator", "run-a", 60, now=later)  # free at once


def test_old_applied_rounds_are_pruned_and_unfinished_ones_kept(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """With keep_rounds=2, each recorded round leaves only the two newest Applied
    AllocationRounds; a round still Applying (a crashed run's) is never deleted."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 4)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))

    def rounds() -> dict[str, str]:
        listed = custom.list_namespaced_custom_object(
            "gpualloc.io", "v1alpha1", ns, "allocationrounds"
        )
        return {o["metadata"]["name"]: o["status"]["phase"] for o in listed["items"]}

    for i in range(3):
        gpu_world.pod(core, ns, f"p{i}", 1, "5")
        options = greedy(round_id=f"r-{i}", record_namespace=ns, keep_rounds=2)
        out = run_once(admin, options=options)
        assert out.report is not None and out.report.bound == 1
        time.sleep(1.1)  # creation times have one-second resolution
    assert rounds() == {"r-1": "Applied", "r-2": "Applied"}
    # A round recorded but never finished stays, however old, and is not counted.
    record_round(
        admin,
        ns,
        Plan("r-0-crashed", bindings=(Binding(f"{ns}/p9", node, (3,)),)),
        solver="greedy",
        payments="critical",
        time_limit=1.0,
        welfare=0.0,
        revenue=0.0,
    )
    assert cluster_api.prune_rounds(admin, ns, keep=1) == ["r-1"]
    assert rounds() == {"r-2": "Applied", "r-0-crashed": "Applying"}
    with pytest.raises(ValueError, match="keep"):
        cluster_api.prune_rounds(admin, ns, keep=0)


def test_wallet_income_arrives_every_period(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """A Wallet that starts empty and earns 5 per second (as the API server stores and
    defaults it): a bid of 8 is over budget at first, and wins once two periods have started
    since the Wallet's creation."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 1)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    custom.create_namespaced_custom_object(
        "gpualloc.io",
        "v1alpha1",
        ns,
        "wallets",
        {
            "apiVersion": "gpualloc.io/v1alpha1",
            "kind": "Wallet",
            "metadata": {"name": "saver"},
            "spec": {"balance": 0, "incomePerPeriod": 5, "period": "1s", "priority": 3},
        },
    )
    gpu_world.pod(core, ns, "want", 1, "8", wallet="saver")
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    early = run_once(admin, options=greedy(round_id="r-income-1", dry_run=True))
    (loss,) = early.result.losers
    assert loss.reason == "over_budget", loss
    created = custom.get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "saver"
    )["metadata"]["creationTimestamp"]
    born = datetime.fromisoformat(created.replace("Z", "+00:00"))
    time.sleep(max(0.0, (born - datetime.now(UTC)).total_seconds() + 3.2))
    later = run_once(admin, options=greedy(round_id="r-income-2"))
    assert later.report is not None and later.report.bound == 1, later.result.losers
    assert core.read_namespaced_pod("want", ns).spec.node_name == node


def test_a_round_priced_by_los_records_its_rule_and_audit(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """``payments=auto`` above its size prices with ``los``: the AllocationRound names the rule
    that priced (not ``auto``) and keeps the audit's figures, which the CRD's schema lets
    through (the API server prunes fields it does not declare)."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 4)
    core = CoreV1Api(admin)
    gpu_world.pod(core, ns, "high", 3, "30")
    gpu_world.pod(core, ns, "low", 3, "12")
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    params = SolveParams(solver="greedy", payments="auto", auto_critical_max_bids=1)
    out = run_once(admin, options=RoundOptions(solve=params, round_id="r-los", record_namespace=ns))
    assert out.result.payment_rule == "los" and out.result.audit is not None
    record = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "allocationrounds", "r-los"
    )
    assert record["spec"]["paymentRule"] == "los"
    audit = record["status"]["audit"]
    assert (audit["rule"], audit["winners"], audit["sampled"], audit["replayed"]) == (
        "los",
        1,
        1,
        1,
    )
    # One node, single-minded whole GPUs, no wallet binding: los is exact there.
    assert audit["maxErr"] == pytest.approx(0.0) and audit["within1pct"] == 1.0
    assert audit["revenueRatio"] == pytest.approx(1.0) and audit["overcharged"] == 0
    assert record["status"]["revenue"] == pytest.approx(12.0)


def _share_pod(core: Any, ns: str, name: str, milli: int, node: str | None = None) -> None:
    """A pod asking for a time-sliced share of ``milli`` milli-GPU, bid milli/1000, made by the
    agent SDK; with ``node``, already running on GPU 0 there, placed by another scheduler (so
    not the allocator's to move)."""
    scheduler = "gpu-allocator" if node is None else "default-scheduler"
    wallet = {"gpualloc.io/wallet": "w"}
    spec = WorkloadSpec(
        name, milli / 1000, milli=milli, annotations=wallet, scheduler_name=scheduler
    )
    (manifest,) = spec.pods()
    if node is not None:
        manifest["spec"]["nodeName"] = node
        manifest["metadata"]["annotations"]["gpualloc.io/gpus"] = "0"
    core.create_namespaced_pod(ns, manifest)


@pytest.mark.parametrize("packing", ["fgd", "pattern"])
def test_a_round_packs_shares_by_the_chosen_rule(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
    packing: str,
) -> None:
    """The Kubernetes path uses the engine's packer, so `run --packing pattern` places shares by
    the pattern rule (issue 15). A time-sliced node of two GPUs, GPU 0 holding a running 470
    share that is not ours to move; a 320 and a 470 wait. FGD's packing puts the 320 beside the
    470 (a 210 gap left) and opens GPU 1 for the other 470; the pattern rule, with the values of
    the round's own bids, fills GPU 0 with 470 + 470 and opens GPU 1 for the 320 (tests/
    test_patterns.py solves the same round offline)."""
    admin = api_client(control_plane.admin_token)
    ns = gpu_world.namespace(admin)
    node = gpu_world.kwok_node(admin, f"shared-{uuid.uuid4().hex[:6]}", 2, shared=True)
    core = CoreV1Api(admin)
    _share_pod(core, ns, "held", 470, node)
    gpu_world.running(core, ns, "held")
    _share_pod(core, ns, "small", 320)
    _share_pod(core, ns, "large", 470)
    import allocator.cluster.loop as loop

    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    argv = ["run", "--once", "--kubeconfig", str(kubeconfig), "--solver", "greedy"]
    assert main([*argv, "--packing", packing, "--round-id", f"r-{packing}"]) == 0
    gpus = {}
    for name in ("small", "large"):
        pod = gpu_world.running(core, ns, name)
        assert pod.spec.node_name == node
        gpus[name] = pod.metadata.annotations["gpualloc.io/gpus"]
    beside_the_held_470 = "small" if packing == "fgd" else "large"
    assert gpus[beside_the_held_470] == "0" and sorted(gpus.values()) == ["0", "1"], gpus
