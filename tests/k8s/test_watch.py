"""Watch mode against the real API server (`gpu-allocator run --watch`): rounds start when the
bids change, a burst is one or two rounds, what the rounds write themselves starts none (an
eviction: one follow-up), a Wallet change starts one, stop is prompt, an API server restart is
survived, and the chart's ServiceAccount may watch what the mode watches.

Every test runs the loop with its own scheduler name and the `only` view (its namespace and
nodes), with an interval ceiling far longer than the test needs, so a round that comes in time
came from a watch; triggers are read from the rounds' outcomes, never inferred from timing."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
import yaml  # noqa: E402
from kubernetes.client import AuthorizationV1Api, CoreV1Api, CustomObjectsApi  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from allocator.cli import main  # noqa: E402
from allocator.cluster import ClusterConfig  # noqa: E402
from allocator.cluster.api import create_wallet  # noqa: E402
from allocator.cluster.loop import RoundOutcome, RoundsSummary, watch_rounds  # noqa: E402
from allocator.cluster.options import RoundOptions  # noqa: E402
from allocator.cluster.watch import POD, WALLET, Change  # noqa: E402
from allocator.solvers import SolveParams  # noqa: E402

pytestmark = pytest.mark.k8s

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpu-allocator"
# Far longer than any test here waits: a round in time is a watch-triggered one.
CEILING = 120.0


def _wait_for(
    what: str, probe: Callable[[], Any], timeout_s: float, loop: Loop | None = None
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` (and the loop's
    rounds) when the time runs out or the loop has died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        if loop is not None and loop.error is not None:
            raise AssertionError(f"the loop died before {what}") from loop.error
        time.sleep(0.05)
    rounds = "" if loop is None else f"; rounds: {loop.describe()}"
    pytest.fail(f"no {what} after {timeout_s:.0f} s{rounds}")


class Loop:
    """``watch_rounds`` in a thread of its own (a context manager: stopped and joined at the
    end), recording every round's outcome and when it was seen."""

    def __init__(self, api: Any, ns: str, scheduler: str, **kwargs: Any) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.summary: RoundsSummary | None = None
        self._lock = threading.Lock()
        self._outcomes: list[tuple[float, RoundOutcome]] = []
        options = RoundOptions(
            solve=SolveParams(solver="greedy", time_limit=5),
            lease=(ns, "allocator", f"watch-test-{uuid.uuid4().hex[:4]}"),
            record_namespace=ns,
        )
        args: dict[str, Any] = {"interval": CEILING, **kwargs}

        def run() -> None:
            try:
                self.summary = watch_rounds(
                    api,
                    ClusterConfig(scheduler_name=scheduler),
                    options,
                    stop=self.stop,
                    on_round=self._record,
                    **args,
                )
            except BaseException as e:  # reported by the waits and at exit
                self.error = e

        self.thread = threading.Thread(target=run, name="watch-rounds-test", daemon=True)

    def _record(self, outcome: RoundOutcome) -> None:
        with self._lock:
            self._outcomes.append((time.monotonic(), outcome))

    @property
    def rounds(self) -> list[RoundOutcome]:
        with self._lock:
            return [o for _, o in self._outcomes]

    def seen_at(self, index: int) -> float:
        with self._lock:
            return self._outcomes[index][0]

    def describe(self) -> str:
        return "; ".join(
            f"{o.plan.round_id} [{o.trigger}] bound {o.report.bound if o.report else '-'}"
            for o in self.rounds
        )

    def wait_rounds(self, n: int, timeout_s: float = 60) -> list[RoundOutcome]:
        _wait_for(f"{n} rounds", lambda: len(self.rounds) >= n, timeout_s, self)
        return self.rounds

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the loop did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error


def _bound(outcome: RoundOutcome) -> set[str]:
    """The pods a round bound (the plan's bindings, when the apply bound any)."""
    if outcome.report is None or outcome.report.bound + outcome.report.already_bound == 0:
        return set()
    return {b.pod for b in outcome.plan.bindings}


def _scheduler() -> str:
    return f"watch-{uuid.uuid4().hex[:6]}"


def _watch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("gpu-allocator-watch-")]


@pytest.fixture()
def only_view(monkeypatch: pytest.MonkeyPatch, gpu_world: Any) -> Callable[..., None]:
    """Limit the rounds' reads to one namespace and its nodes (other tests share the server)."""
    import allocator.cluster.loop as loop

    def limit(ns: str, *nodes: str) -> None:
        monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, *nodes))

    return limit


def test_a_pod_created_while_idle_is_bound_by_a_watch_round(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """With nothing pending and a ceiling of 120 s, a pod created after the first round is
    bound by the next round, started by the pod's creation (default debounce), and no other
    round runs meanwhile."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 4)
    only_view(ns, node)
    scheduler = _scheduler()
    with Loop(admin, ns, scheduler) as loop:
        (first,) = loop.wait_rounds(1)
        assert first.trigger is not None and first.trigger.reason == "start"
        created = time.monotonic()
        gpu_world.pod(core, ns, "p", 1, "5", scheduler)
        _wait_for("the pod bound", lambda: core.read_namespaced_pod("p", ns).spec.node_name, 30)
        seen = time.monotonic() - created
        rounds = loop.wait_rounds(2)
        print(f"\npod created -> bound (seen by polling every 50 ms): {seen:.2f} s")
    assert len(rounds) == 2, loop.describe()
    trigger = rounds[1].trigger
    assert trigger is not None and trigger.reason == "change", loop.describe()
    assert trigger.first == Change(POD, ns, "p", "pending pod added")
    assert _bound(rounds[1]) == {f"{ns}/p"}


def test_a_burst_is_one_or_two_rounds_and_a_quiet_cluster_stays_quiet(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """20 pods created at once on a 24-GPU node are cleared in one or two rounds (not 20): all
    bound, the rounds recorded. Then, for 5 s, the rounds' own writes (annotations, bindings,
    Won events, AllocationRounds, the Lease) start no round: at most one late round for a
    creation, binding nothing, and no cycle."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    ns, node = gpu_world.cluster(admin, 24)
    create_wallet(admin, ns, "rich", 10_000)
    only_view(ns, node)
    scheduler = _scheduler()
    with Loop(admin, ns, scheduler) as loop:  # the default debounce (0.2 s, at most 1 s)
        loop.wait_rounds(1)
        before = len(loop.rounds)
        with ThreadPoolExecutor(20) as pool:
            for f in [
                pool.submit(gpu_world.pod, core, ns, f"b{i:02d}", 1, str(10 + i), scheduler, "rich")
                for i in range(20)
            ]:
                f.result()

        def bound() -> int:
            return sum(len(_bound(o)) for o in loop.rounds[before:])

        _wait_for("20 pods bound", lambda: bound() >= 20, 60, loop)
        burst = loop.rounds[before:]
        settled = len(loop.rounds)
        time.sleep(5.0)  # the quiet window observed (nothing to wait for: nothing should come)
        quiet = loop.rounds[settled:]
    described = loop.describe()
    print(f"\nburst of 20: {len(burst)} round(s), then {len(quiet)} in 5 s; {described}")
    assert 1 <= len(burst) <= 2, described
    assert all(o.trigger is not None and o.trigger.reason == "change" for o in burst), described
    # Every creation is one change, and nothing the rounds wrote was one.
    assert sum(o.trigger.changes for o in burst + quiet if o.trigger) == 20, described
    assert bound() == 20
    on_node = [p for p in core.list_namespaced_pod(ns).items if p.spec.node_name == node]
    assert len(on_node) == 20
    records = custom.list_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "allocationrounds"
    )["items"]
    assert records and all(r["status"]["phase"] == "Applied" for r in records)
    # A late creation event may start one more round (its first change a pod added); nothing
    # the rounds wrote may, and no round binds anything then.
    assert len(quiet) <= 1, described
    for o in quiet:
        assert o.trigger is not None and o.trigger.first is not None, described
        assert o.trigger.first.what == "pending pod added", described
        assert not _bound(o), described


def test_a_quiet_cluster_gets_only_the_ceilings_rounds(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """With a losing bid pending (each round writes its OverBudget event again) and a 2 s
    ceiling, every round after the first over 7 s is an interval round: the rounds' own
    writes start none."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 1)
    create_wallet(admin, ns, "poor", 1)
    scheduler = _scheduler()
    gpu_world.pod(core, ns, "want", 1, "8", scheduler, "poor")
    only_view(ns, node)
    with Loop(admin, ns, scheduler, interval=2.0) as loop:
        loop.wait_rounds(1)
        time.sleep(7.0)  # the window observed
    rounds = loop.rounds
    assert 2 <= len(rounds) <= 6, loop.describe()
    assert [o.trigger.reason for o in rounds if o.trigger] == ["start"] + ["interval"] * (
        len(rounds) - 1
    ), loop.describe()
    assert all(not _bound(o) for o in rounds)
    events = [e for e in core.list_namespaced_event(ns).items if e.involved_object.name == "want"]
    assert len(events) == 1 and events[0].count == len(rounds), [
        (e.reason, e.count) for e in events
    ]


def test_an_eviction_causes_one_follow_up_round_and_no_more(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """On a 1-GPU kwok node, a low bid is bound (and runs); a high bid then starts a round that
    evicts it (kwok, its kubelet, finishes the deletion) and binds the high one. The evicted pod
    being gone is one change: exactly one follow-up round, which writes nothing; then 4 s of
    quiet (the wallet charged for the eviction, the pods going Running started none)."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 1)
    only_view(ns, node)
    scheduler = _scheduler()
    with Loop(admin, ns, scheduler) as loop:
        loop.wait_rounds(1)
        gpu_world.pod(core, ns, "low", 1, "5", scheduler)
        _wait_for("low bound", lambda: core.read_namespaced_pod("low", ns).spec.node_name, 30)
        gpu_world.running(core, ns, "low")
        gpu_world.pod(core, ns, "high", 1, "40", scheduler)
        _wait_for("high bound", lambda: core.read_namespaced_pod("high", ns).spec.node_name, 60)
        n = len(loop.wait_rounds(3))
        evicting = next(i for i, o in enumerate(loop.rounds) if o.plan.evictions)
        _wait_for("the follow-up round", lambda: len(loop.rounds) > evicting + 1, 30, loop)
        time.sleep(4.0)  # the quiet window observed
        after = loop.rounds[evicting + 1 :]
    described = loop.describe()
    print(f"\neviction: {described}")
    assert n >= 3
    assert [e.pod for e in loop.rounds[evicting].plan.evictions] == [f"{ns}/low"], described
    assert _bound(loop.rounds[evicting]) == {f"{ns}/high"}, described
    assert len(after) == 1, described
    trigger = after[0].trigger
    assert trigger is not None and trigger.first == Change(POD, ns, "low", "running GPU pod ended")
    assert not after[0].plan.bindings and not after[0].plan.evictions, described
    wallet = CustomObjectsApi(admin).get_namespaced_custom_object(
        "gpualloc.io", "v1alpha1", ns, "wallets", "w"
    )
    assert wallet["status"]["spent"] > 0, wallet.get("status")


def test_a_wallet_change_starts_a_round(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """A bid of 8 from a Wallet of 1 loses (over budget) in the first round; raising the
    Wallet's balance starts a round, triggered by the Wallet, that binds the pod."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    ns, node = gpu_world.cluster(admin, 1)
    create_wallet(admin, ns, "poor", 1)
    scheduler = _scheduler()
    gpu_world.pod(core, ns, "want", 1, "8", scheduler, "poor")
    only_view(ns, node)
    with Loop(admin, ns, scheduler) as loop:
        (first,) = loop.wait_rounds(1)
        assert [x.reason for x in first.result.losers] == ["over_budget"]
        custom.patch_namespaced_custom_object(
            "gpualloc.io", "v1alpha1", ns, "wallets", "poor", {"spec": {"balance": 100}}
        )
        _wait_for("the pod bound", lambda: core.read_namespaced_pod("want", ns).spec.node_name, 30)
        rounds = loop.wait_rounds(2)
    described = loop.describe()
    assert len(rounds) == 2, described
    trigger = rounds[1].trigger
    assert trigger is not None and trigger.reason == "change", described
    assert trigger.first == Change(WALLET, ns, "poor", "wallet changed"), described
    assert _bound(rounds[1]) == {f"{ns}/want"}


def test_stop_ends_the_loop_and_its_watch_threads_promptly(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
) -> None:
    """Setting stop while the loop waits for changes ends it within a few seconds (the watch
    requests last 1 s), with every watch thread gone and the rounds' summary returned."""
    admin = api_client(control_plane.admin_token)
    ns, node = gpu_world.cluster(admin, 1)
    only_view(ns, node)
    loop = Loop(admin, ns, _scheduler())
    with loop:
        loop.wait_rounds(1)
        assert len(_watch_threads()) == 3
        asked = time.monotonic()
        loop.stop.set()
        loop.thread.join(30)
        took = time.monotonic() - asked
        print(f"\nstop -> loop and watch threads ended: {took:.2f} s")
    assert not loop.thread.is_alive()
    assert took < 10, took
    assert _watch_threads() == []
    assert loop.summary == RoundsSummary(1, 0)


def test_an_api_server_restart_is_survived_and_watching_resumes(
    api_client: Callable[[str], Any],
    control_plane: Any,
    control_plane_processes: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The API server is restarted while the loop waits: the pod watch fails, is retried with
    backoff and resumes (logged); a pod created once the server is back is bound by a round its
    creation started (the ceiling is 120 s)."""
    caplog.set_level(logging.INFO, logger="allocator.cluster.watch")
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, node = gpu_world.cluster(admin, 2)
    only_view(ns, node)
    scheduler = _scheduler()
    with Loop(admin, ns, scheduler) as loop:
        loop.wait_rounds(1)
        control_plane_processes.restart_apiserver()
        gpu_world.pod(core, ns, "after", 1, "5", scheduler)
        _wait_for("the pod bound", lambda: core.read_namespaced_pod("after", ns).spec.node_name, 60)
        rounds = loop.wait_rounds(2)
        _wait_for("the pod watch resumed", lambda: "watch of pods resumed" in caplog.text, 30)
    described = loop.describe()
    assert "watch of pods failed" in caplog.text
    binding = [o for o in rounds if _bound(o)]
    assert len(binding) == 1, described
    trigger = binding[0].trigger
    assert trigger is not None and trigger.reason == "change", described
    assert trigger.first == Change(POD, ns, "after", "pending pod added"), described
    assert loop.error is None


def _render(helm: Path, release: str, ns: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", ns, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_charts_watch_mode_runs_with_its_service_account(
    helm: Path,
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    only_view: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With deployment.watch the Deployment runs `run --watch --interval N` and the ClusterRole
    grants watch on nodes, pods and wallets (and no more than that beyond the default). Its
    container arguments, as the API server stores them, with a token of its ServiceAccount run
    two rounds: the first binds a pod pending at the start, the second is started by a pod
    created after that and binds it; no watch fails."""
    caplog.set_level(logging.INFO, logger="allocator")
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns = f"chart-watch-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    release = f"w{uuid.uuid4().hex[:6]}"
    values = "deployment.enabled=true,deployment.watch=true,deployment.interval=120"
    docs = _render(helm, release, ns, "--set", values + ",cronJob.enabled=false")
    default_rules = next(d for d in _render(helm, release, ns) if d["kind"] == "ClusterRole")[
        "rules"
    ]
    rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    watched = {r for x in rules if "watch" in x["verbs"] for r in x["resources"]}
    before = {r for x in default_rules if "watch" in x["verbs"] for r in x["resources"]}
    assert watched - before == {"nodes", "pods", "wallets"}
    dyn = DynamicClient(admin)
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.create(body=doc, namespace=ns if resource.namespaced else None)
    name = f"{release}-gpu-allocator"
    deployment = admin.sanitize_for_serialization(
        kubernetes.client.AppsV1Api(admin).read_namespaced_deployment(name, ns)
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:4] == ["run", "--watch", "--interval", "120"]

    scheduler = args[args.index("--scheduler-name") + 1]
    wns, node = gpu_world.cluster(admin, 2)
    gpu_world.pod(core, wns, "first", 1, "5", scheduler)
    only_view(wns, node)
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    sa = api_client(token)
    for resource, group in (("pods", ""), ("nodes", ""), ("wallets", "gpualloc.io")):
        review = AuthorizationV1Api(sa).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {"verb": "watch", "resource": resource, "group": group}
                }
            }
        )
        assert review.status.allowed, resource
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "sa.kubeconfig", token)

    def second_pod() -> None:
        _wait_for(
            "the first pod bound", lambda: core.read_namespaced_pod("first", wns).spec.node_name, 60
        )
        gpu_world.pod(core, wns, "second", 1, "5", scheduler)

    helper = threading.Thread(target=second_pod, daemon=True)
    helper.start()
    assert main([*args, "--kubeconfig", str(kubeconfig), "--max-rounds", "2"]) == 0
    helper.join(10)
    assert core.read_namespaced_pod("second", wns).spec.node_name == node
    assert f"started by change: Pod {wns}/second: pending pod added" in caplog.text, caplog.text
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], [r.getMessage() for r in warnings]
