"""Watch mode without an API server: which events start a round (the pure filter), the debounce
and ceiling (an injected clock), a relist after a broken watch, and argument checks (the loop
against the real API server is in tests/k8s/test_watch.py)."""

from __future__ import annotations

import copy
import json
import logging
import threading
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from allocator.cli import main
from allocator.cluster import ClusterConfig
from allocator.cluster import watch as watch_module
from allocator.cluster.api import ApplyReport, _bind
from allocator.cluster.loop import watch_rounds
from allocator.cluster.options import RoundOptions
from allocator.cluster.plan import Binding
from allocator.cluster.watch import (
    DELETED,
    NODE,
    POD,
    WALLET,
    Change,
    ClusterWatch,
    Debouncer,
    RoundTrigger,
    _Stream,
    classify,
    next_round_at,
    pod_state,
    what_changed,
)

CFG = ClusterConfig(scheduler_name="gpu-allocator")


def _pending(name: str = "p", scheduler: str = "gpu-allocator", bid: str = "5") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "resourceVersion": "10",
            "annotations": {"gpualloc.io/bid": bid, "gpualloc.io/wallet": "w"},
        },
        "spec": {
            "schedulerName": scheduler,
            "containers": [
                {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
            ],
        },
        "status": {"phase": "Pending"},
    }


def _running(name: str = "r", gpus: str = "1", scheduler: str = "other") -> dict[str, Any]:
    pod = _pending(name, scheduler)
    pod["spec"]["nodeName"] = "gpu-1"
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def _wallet(balance: float = 50) -> dict[str, Any]:
    return {
        "metadata": {"name": "w", "namespace": "team", "uid": "uid-w", "resourceVersion": "3"},
        "spec": {"balance": balance},
        "status": {"spent": 0, "ledger": []},
    }


def _node() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "gpu-1",
            "labels": {
                "nvidia.com/gpu.product": "H100-80GB",
                "nvidia.com/gfd.timestamp": "1700000000",
                "topology.gpualloc.io/rack": "r1",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}],
        },
    }


def _step(kind: str, before: dict[str, Any] | None, event: str, after: dict[str, Any]) -> Any:
    """What classify says of ``after`` arriving as ``event`` with ``before`` known."""
    old = None
    if before is not None:
        old, _ = classify(kind, "ADDED", before, None, CFG)
    return classify(kind, event, after, old, CFG)[1]


def test_a_pending_pod_of_ours_added_changed_or_deleted_matters() -> None:
    """A pending pod of the allocator's scheduler starts a round when it appears, when its bid
    changes and when it is deleted."""
    pod = _pending()
    assert _step(POD, None, "ADDED", pod) == "pending pod added"
    raised = copy.deepcopy(pod)
    raised["metadata"]["annotations"]["gpualloc.io/bid"] = "50"
    assert _step(POD, pod, "MODIFIED", raised) == "pending pod changed"
    assert _step(POD, pod, DELETED, pod) == "pending pod gone"


def test_other_schedulers_pending_pods_do_not_matter() -> None:
    """A pending pod of another scheduler is no bid: its comings and goings start no round."""
    pod = _pending(scheduler="default-scheduler")
    assert _step(POD, None, "ADDED", pod) is None
    assert _step(POD, pod, DELETED, pod) is None


def test_status_heartbeats_start_no_round() -> None:
    """Status-only updates (conditions, container states, the phase going Pending -> Running on
    a node) of a pending or a running pod change no state."""
    pod = _pending()
    beat = copy.deepcopy(pod)
    beat["status"]["conditions"] = [{"type": "PodScheduled", "status": "False"}]
    beat["metadata"]["resourceVersion"] = "11"
    assert _step(POD, pod, "MODIFIED", beat) is None
    running = _running()
    starting = copy.deepcopy(running)
    starting["status"] = {"phase": "Pending"}
    beat = copy.deepcopy(running)
    beat["status"]["containerStatuses"] = [{"name": "main", "restartCount": 1}]
    assert _step(POD, starting, "MODIFIED", running) is None
    assert _step(POD, running, "MODIFIED", beat) is None


def test_the_allocators_own_binding_starts_no_round() -> None:
    """What apply writes to bind a pod (the annotations of allocator.cluster.api._bind, then
    spec.nodeName) changes nothing that starts a round: a bid becoming a running pod takes
    room and frees none."""
    pod = _pending()
    sent: list[Any] = []

    class FakeCore:
        def read_namespaced_pod(self, name: str, ns: str, **kw: Any) -> Any:
            return type("R", (), {"data": json.dumps(pod).encode()})()

        def patch_namespaced_pod(self, name: str, ns: str, body: Any, **kw: Any) -> Any:
            sent.append(body)
            return type("R", (), {"data": b"{}"})()

        def create_namespaced_pod_binding(self, name: str, ns: str, body: Any, **kw: Any) -> Any:
            return type("R", (), {"data": b"{}"})()

    report = ApplyReport()
    assert _bind(FakeCore(), Binding("team/p", "gpu-1", (0,)), "r-1", report)
    (patch,) = sent
    annotated = copy.deepcopy(pod)
    annotated["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert set(patch["metadata"]["annotations"]) - set(pod["metadata"]["annotations"])
    assert _step(POD, pod, "MODIFIED", annotated) is None
    bound = copy.deepcopy(annotated)
    bound["spec"]["nodeName"] = "gpu-1"
    assert _step(POD, annotated, "MODIFIED", bound) is None


def test_an_eviction_is_one_change_when_the_pod_is_gone() -> None:
    """A running GPU pod being deleted (an eviction: deletionTimestamp set) still holds its
    room and starts no round; once it is gone, or has finished, its room is free: a round."""
    pod = _running()
    terminating = copy.deepcopy(pod)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert _step(POD, pod, "MODIFIED", terminating) is None
    assert _step(POD, terminating, DELETED, terminating) == "running GPU pod ended"
    done = copy.deepcopy(pod)
    done["status"]["phase"] = "Succeeded"
    assert _step(POD, pod, "MODIFIED", done) == "running GPU pod ended"


def test_pods_without_gpus_and_pods_appearing_on_nodes_start_no_round() -> None:
    """A running pod without GPUs going away, and a GPU pod that appears already on a node
    (placed by someone else), change nothing a round could use."""
    cpu_only = _running(gpus="0")
    assert _step(POD, cpu_only, DELETED, cpu_only) is None
    assert _step(POD, None, "ADDED", _running()) is None


def test_wallet_spec_matters_and_its_status_does_not() -> None:
    """A Wallet's charges (status.spent, the ledger: only the allocator writes them) start no
    round; a new balance, a new Wallet, a deleted one or a new label do."""
    w = _wallet()
    charged = copy.deepcopy(w)
    charged["status"] = {"spent": 12.0, "lastRound": "r-1", "ledger": [{"round": "r-1"}]}
    charged["metadata"]["resourceVersion"] = "4"
    assert _step(WALLET, w, "MODIFIED", charged) is None
    richer = copy.deepcopy(w)
    richer["spec"]["balance"] = 500
    assert _step(WALLET, w, "MODIFIED", richer) == "wallet changed"
    labelled = copy.deepcopy(w)
    labelled["metadata"]["labels"] = {"gpualloc.io/agent": "w"}
    assert _step(WALLET, w, "MODIFIED", labelled) == "wallet changed"
    assert _step(WALLET, None, "ADDED", w) == "wallet added"
    assert _step(WALLET, w, DELETED, w) == "wallet gone"


def test_node_heartbeats_do_not_matter_and_its_offer_does() -> None:
    """A node's heartbeat (conditions, GFD's timestamp label) starts no round; its allocatable
    GPUs, its rack label, a new node or a deleted one do."""
    n = _node()
    beat = copy.deepcopy(n)
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:00:10Z"
    beat["metadata"]["labels"]["nvidia.com/gfd.timestamp"] = "1700000060"
    assert _step(NODE, n, "MODIFIED", beat) is None
    fewer = copy.deepcopy(n)
    fewer["status"]["allocatable"]["nvidia.com/gpu"] = "7"
    assert _step(NODE, n, "MODIFIED", fewer) == "node changed"
    moved = copy.deepcopy(n)
    moved["metadata"]["labels"]["topology.gpualloc.io/rack"] = "r2"
    assert _step(NODE, n, "MODIFIED", moved) == "node changed"
    assert _step(NODE, None, "ADDED", n) == "node added"
    assert _step(NODE, n, DELETED, n) == "node gone"


def test_pod_transition_table() -> None:
    """The transition table: bid -> running and nothing -> running are silent, every other
    move of a bid or a running GPU pod is a change, and equal states never are."""
    bid = pod_state(_pending(), CFG)
    holds = pod_state(_running(), CFG)
    assert bid is not None and holds is not None
    assert what_changed(POD, bid, bid) is None
    assert what_changed(POD, bid, holds) is None
    assert what_changed(POD, None, holds) is None
    assert what_changed(POD, holds, None) == "running GPU pod ended"
    assert what_changed(POD, None, None) is None


def test_relist_reports_what_changed_while_disconnected() -> None:
    """After a broken watch, a fresh list is diffed against the states kept: a running GPU pod
    no longer listed and a new pending pod are reported; objects that did not change are not;
    unknown event types (BOOKMARK) are ignored."""
    seen: list[Change] = []
    stream = _Stream(POD, CFG, seen.append)
    stream.resync([_running("r1"), _running("r2"), _pending("p1")])
    assert [str(c) for c in seen] == ["Pod team/p1: pending pod added"]
    seen.clear()
    stream.handle("BOOKMARK", {"metadata": {"resourceVersion": "99"}})
    stream.resync([_running("r1"), _pending("p1"), _pending("p2")])
    assert sorted(str(c) for c in seen) == [
        "Pod team/p2: pending pod added",
        "Pod team/r2: running GPU pod ended",
    ]
    seen.clear()
    stream.handle("DELETED", _pending("p1"))
    assert [c.what for c in seen] == ["pending pod gone"]
    assert set(stream.states) == {("team", "r1"), ("team", "p2")}


class _Scripted:
    """Stands in for the API: lists answer ``lists`` in turn (resourceVersion 1, 2, ...); each
    watch request plays the next entry of ``watches``: an exception to raise, or events to
    yield, after which the ClusterWatch is told to stop."""

    def __init__(self, cw: ClusterWatch, lists: list[list[Any]], watches: list[Any]) -> None:
        self.cw, self.lists, self.watches = cw, lists, watches
        self.listed = 0
        self.watched_from: list[str] = []

    def list(self, *args: Any, **kw: Any) -> Any:
        self.listed += 1
        items = self.lists[min(self.listed, len(self.lists)) - 1]
        body = {"metadata": {"resourceVersion": str(self.listed)}, "items": items}
        return type("Response", (), {"data": json.dumps(body).encode()})()

    def watch(self) -> Any:
        script = self

        class FakeWatch:
            def stream(self, func: Any, *args: Any, **kw: Any) -> Any:
                script.watched_from.append(kw["resource_version"])
                step = script.watches.pop(0)
                if isinstance(step, BaseException):
                    raise step
                yield from step
                script.cw._stop.set()

            def stop(self) -> None:
                pass

        return FakeWatch()


def _run_pod_stream(
    monkeypatch: pytest.MonkeyPatch, lists: list[list[Any]], watches: list[Any]
) -> tuple[ClusterWatch, _Scripted, list[str]]:
    """Run the pod stream's thread body of a ClusterWatch against a script, to its end."""
    from kubernetes import client

    seen: list[Change] = []
    cw = ClusterWatch(client.ApiClient(client.Configuration()), CFG, seen.append)
    cw.max_backoff = 0.01
    script = _Scripted(cw, lists, watches)
    cw.streams[POD].call = script.list
    monkeypatch.setattr(watch_module, "_raw_watch", script.watch)
    runner = threading.Thread(target=cw._run, args=(cw.streams[POD],))
    runner.start()
    runner.join(10)
    assert not runner.is_alive()
    return cw, script, [str(c) for c in seen]


def test_an_expired_watch_is_listed_afresh_and_watched_from_the_new_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watch that answers 410 Gone is followed by a fresh list, diffed against the states
    kept (the running pod gone meanwhile and the new pending pod are reported), and a watch
    from the new list's resourceVersion; no failure is counted."""
    from kubernetes.client.exceptions import ApiException

    later = _pending("p3")
    cw, script, seen = _run_pod_stream(
        monkeypatch,
        [[_running("r1"), _pending("p1")], [_pending("p1"), _pending("p2")]],
        [ApiException(status=410, reason="Gone"), [{"type": "ADDED", "raw_object": later}]],
    )
    assert seen == [
        "Pod team/p1: pending pod added",
        "Pod team/p2: pending pod added",
        "Pod team/r1: running GPU pod ended",
        "Pod team/p3: pending pod added",
    ]
    stats = cw.stats[POD]
    assert (stats.lists, stats.expired, stats.failures, stats.events) == (2, 1, 0, 1)
    assert script.watched_from == ["1", "2"]


def test_a_failed_watch_is_retried_from_where_it_was(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A watch request that fails (the server unreachable) is logged and retried after a
    backoff from the same resourceVersion, with no new list; success is logged as resumed."""
    caplog.set_level(logging.INFO, logger="allocator.cluster.watch")
    cw, script, seen = _run_pod_stream(
        monkeypatch,
        [[_pending("p1")]],
        [ConnectionRefusedError("refused"), [{"type": "DELETED", "raw_object": _pending("p1")}]],
    )
    assert seen == ["Pod team/p1: pending pod added", "Pod team/p1: pending pod gone"]
    assert (cw.stats[POD].lists, cw.stats[POD].failures) == (1, 1)
    assert script.watched_from == ["1", "1"]
    assert "watch of pods failed (ConnectionRefusedError: refused), attempt 1" in caplog.text
    assert "watch of pods resumed after 1 failed attempt(s)" in caplog.text


def test_first_round_is_due_at_once_then_the_ceiling() -> None:
    """Without changes the first round starts at once and the next one interval seconds after
    the last start."""
    args = {"debounce": 0.2, "max_delay": 1.0, "interval": 30.0}
    at, why = next_round_at(last_round=None, first_change=None, last_change=None, **args)
    assert why == "start" and at < 0
    assert next_round_at(last_round=100.0, first_change=None, last_change=None, **args) == (
        130.0,
        "interval",
    )


def test_one_change_waits_the_debounce_and_a_stream_is_capped() -> None:
    """One change is answered debounce seconds after it; changes that keep coming push the
    round back, but never past max_delay after the first one; the ceiling wins when earlier."""
    args = {"debounce": 0.2, "max_delay": 1.0, "interval": 30.0}
    one = next_round_at(last_round=0.0, first_change=10.0, last_change=10.0, **args)
    assert one == (pytest.approx(10.2), "change")
    burst = next_round_at(last_round=0.0, first_change=10.0, last_change=10.5, **args)
    assert burst == (pytest.approx(10.7), "change")
    endless = next_round_at(last_round=0.0, first_change=10.0, last_change=10.95, **args)
    assert endless == (pytest.approx(11.0), "change")
    late = next_round_at(last_round=0.0, first_change=29.95, last_change=29.95, **args)
    assert late == (30.0, "interval")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_becomes_one_trigger_naming_its_first_change() -> None:
    """The first round is a plain start (it answers all there is); then twenty changes 10 ms
    apart are one round, due 0.2 s after the last; its trigger names the first change, counts
    all twenty and says how long the first waited; the next ceiling counts from that start."""
    clock = FakeClock()
    timer = Debouncer(debounce=0.2, max_delay=1.0, interval=30.0, clock=clock)
    timer.notify(Change(NODE, "", "gpu-1", "node added"))  # the first lists, say
    assert timer.take() == RoundTrigger("start")
    for i in range(20):
        clock.now = 5.0 + i * 0.01
        timer.notify(Change(POD, "team", f"p{i}", "pending pod added"))
    assert timer.due() == (pytest.approx(5.39), "change")
    clock.now = 5.4
    trigger = timer.take()
    assert trigger.reason == "change" and trigger.changes == 20
    assert trigger.first == Change(POD, "team", "p0", "pending pod added")
    assert trigger.waited == pytest.approx(0.4)
    assert str(trigger) == ("change: Pod team/p0: pending pod added (+19 more), 0.40 s after it")
    assert timer.pending == 0 and timer.due() == (pytest.approx(35.4), "interval")


def test_a_change_during_a_round_waits_for_the_next() -> None:
    """A change reported after a round took its trigger (while it runs) is not lost: it is the
    next round's."""
    clock = FakeClock()
    timer = Debouncer(debounce=0.2, max_delay=1.0, interval=30.0, clock=clock)
    timer.take()
    clock.now = 1.0
    timer.notify(Change(WALLET, "team", "w", "wallet changed"))
    assert timer.take().changes == 1
    clock.now = 1.1  # the round runs; a pod comes meanwhile
    timer.notify(Change(POD, "team", "p", "pending pod added"))
    clock.now = 1.5
    nxt = timer.take()
    assert (nxt.reason, nxt.changes, nxt.first and nxt.first.name) == ("change", 1, "p")


def test_wait_returns_when_due_by_the_injected_clock_and_none_on_stop() -> None:
    """wait() hands out the trigger once the injected clock reaches the due time (the test moves
    the clock and pokes the waiter), and returns None once stop is set."""
    clock = FakeClock()
    timer = Debouncer(debounce=0.2, max_delay=1.0, interval=30.0, clock=clock)
    stop = threading.Event()
    assert timer.wait(stop) == RoundTrigger("start")
    got: list[RoundTrigger | None] = []
    waiter = threading.Thread(target=lambda: got.append(timer.wait(stop)))
    waiter.start()
    clock.now = 2.0
    timer.notify(Change(NODE, "", "gpu-1", "node changed"))
    clock.now = 2.2
    timer.poke()
    waiter.join(10)
    assert not waiter.is_alive()
    assert got and got[0] is not None and got[0].reason == "change"
    waiter = threading.Thread(target=lambda: got.append(timer.wait(stop)))
    waiter.start()
    stop.set()
    waiter.join(10)
    assert not waiter.is_alive() and got[-1] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": 5, "debounce": -0.1}, "debounce"),
        ({"interval": 5, "debounce": float("nan")}, "debounce"),
        ({"interval": 5, "debounce": "0.2"}, "debounce"),
        ({"interval": 5, "max_delay": 0}, "max_delay"),
        ({"interval": 5, "debounce": 2.0, "max_delay": 1.0}, "max_delay"),
        ({"interval": 5, "max_rounds": 0}, "max_rounds"),
        ({"interval": 5, "options": RoundOptions(round_id="r-1")}, "round_id"),
        ({"interval": 5, "sync_timeout": -1}, "sync_timeout"),
    ],
)
def test_watch_rounds_rejects_bad_arguments_naming_them(
    kwargs: dict[str, object], field: str
) -> None:
    """Bad settings raise ValueError naming the field before any watch or round starts."""
    with pytest.raises(ValueError, match=f"^{field}: "):
        watch_rounds(None, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--once", "--watch"], "--watch"),
        (["--interval", "5", "--debounce", "0.1"], "--debounce"),
        (["--interval", "5", "--max-delay", "3"], "--max-delay"),
        (["--interval", "5", "--watch", "--debounce", "2", "--max-delay", "1"], "--max-delay"),
    ],
)
def test_cli_rejects_watch_options_out_of_place(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` exits 2 naming the option when --watch lacks --interval, --debounce or
    --max-delay come without --watch, or the cap is shorter than the debounce."""
    assert main(["run", *argv]) == 2
    assert f"error: {option}: " in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_cli_rejects_a_bad_debounce(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --debounce that is not a number of seconds >= 0 is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["run", "--interval", "5", "--watch", "--debounce", value])
    assert exited.value.code == 2
    assert "--debounce" in capsys.readouterr().err
