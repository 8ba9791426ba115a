"""Malformed wallets and bids against the real API server: each is left out of the round and
reported as a Warning Event on the object itself (found the way `kubectl describe` finds it, by
the object's uid), and the round goes on for everyone else."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import ApiextensionsV1Api, CoreV1Api, CustomObjectsApi  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from rounds import greedy  # noqa: E402  (tests/harness, on sys.path from conftest)

import allocator.cluster.loop as loop  # noqa: E402

pytestmark = pytest.mark.k8s
G, V = "gpualloc.io", "v1alpha1"
WALLETS = "wallets.gpualloc.io"


def _schema_takes(custom: Any, ns: str, spec: dict[str, Any]) -> bool:
    """Whether the API server accepts a Wallet with ``spec`` now (a dry run: nothing stored)."""
    body = {"apiVersion": f"{G}/{V}", "kind": "Wallet", "metadata": {"name": "probe"}, "spec": spec}
    try:
        custom.create_namespaced_custom_object(G, V, ns, "wallets", body, dry_run="All")
        return True
    except ApiException as e:
        assert e.status == 422, e
        return False


def _set_wallet_schema(admin: Any, spec_schema: dict[str, Any]) -> None:
    """Replace the schema of the Wallet CRD's ``spec`` (every other part kept)."""
    ext = ApiextensionsV1Api(admin)
    crd = admin.sanitize_for_serialization(ext.read_custom_resource_definition(WALLETS))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = spec_schema
    ext.replace_custom_resource_definition(WALLETS, crd)


def _wait(what: str, probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f} s"
        time.sleep(0.2)


def _events(core: Any, ns: str, kind: str, name: str, uid: str) -> list[Any]:
    """The object's events as `kubectl describe` selects them (kind, name, namespace, uid)."""
    selector = (
        f"involvedObject.kind={kind},involvedObject.name={name},"
        f"involvedObject.namespace={ns},involvedObject.uid={uid}"
    )
    return list(core.list_namespaced_event(ns, field_selector=selector).items)


def test_malformed_wallet_and_bids_become_events_on_them(
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    monkeypatch: pytest.MonkeyPatch,
    gpu_world: Any,
) -> None:
    """A Wallet stored while the CRD's schema was laxer (Kubernetes does not re-validate stored
    objects when a schema tightens) with a balance that is not a number, and pods whose bid is
    not a number or whose wallet does not exist: the round binds the good pod, and each bad
    object gets a Warning Event `Skipped` naming the field, on the object."""
    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    custom = CustomObjectsApi(admin)
    ns, node = gpu_world.cluster(admin, 2)
    bad_spec = {"balance": "lots"}
    assert not _schema_takes(custom, ns, bad_spec)  # the shipped schema refuses it (422)
    ext = ApiextensionsV1Api(admin)
    shipped = copy.deepcopy(
        admin.sanitize_for_serialization(ext.read_custom_resource_definition(WALLETS))["spec"][
            "versions"
        ][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    )
    try:
        _set_wallet_schema(admin, {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        _wait("laxer schema", lambda: _schema_takes(custom, ns, bad_spec))
        custom.create_namespaced_custom_object(
            G,
            V,
            ns,
            "wallets",
            {
                "apiVersion": f"{G}/{V}",
                "kind": "Wallet",
                "metadata": {"name": "broke"},
                "spec": bad_spec,
            },
        )
    finally:
        _set_wallet_schema(admin, shipped)
        _wait("shipped schema back", lambda: not _schema_takes(custom, ns, bad_spec))
    broke = custom.get_namespaced_custom_object(G, V, ns, "wallets", "broke")
    assert broke["spec"]["balance"] == "lots"  # served as stored (defaults added on read)

    gpu_world.pod(core, ns, "good", 1, "5")
    gpu_world.pod(core, ns, "bad-bid", 1, "lots")
    gpu_world.pod(core, ns, "no-wallet", 1, "5", wallet="nope")
    gpu_world.pod(core, ns, "broke-wallet", 1, "5", wallet="broke")
    monkeypatch.setattr(loop, "fetch", gpu_world.only(ns, node))
    out = loop.run_once(admin, options=greedy(round_id="r-malformed"))
    assert out.report is not None and out.report.bound == 1 and out.report.problems == []
    assert core.read_namespaced_pod("good", ns).spec.node_name == node

    expected = {
        ("Wallet", "broke"): "spec.balance: not a number: 'lots'",
        ("Pod", "bad-bid"): "metadata.annotations[gpualloc.io/bid]: not a number: 'lots'",
        ("Pod", "no-wallet"): f"metadata.annotations[gpualloc.io/wallet]: no Wallet {ns}/nope",
        ("Pod", "broke-wallet"): f"metadata.annotations[gpualloc.io/wallet]: no Wallet {ns}/broke",
    }
    for (kind, name), field_and_reason in expected.items():
        if kind == "Wallet":
            uid = broke["metadata"]["uid"]
        else:
            uid = core.read_namespaced_pod(name, ns).metadata.uid
        (event,) = _events(core, ns, kind, name, uid)
        assert (event.type, event.reason) == ("Warning", "Skipped")
        assert event.message == f"round r-malformed: left out: {field_and_reason}"
        if kind == "Wallet":
            assert event.involved_object.api_version == f"{G}/{V}"
    good_uid = core.read_namespaced_pod("good", ns).metadata.uid
    assert [e.reason for e in _events(core, ns, "Pod", "good", good_uid)] == ["Won"]
    custom.delete_namespaced_custom_object(G, V, ns, "wallets", "broke")
