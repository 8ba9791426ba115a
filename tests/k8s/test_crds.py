"""The chart's CRDs against the real API server: accepted, established, and their OpenAPI schemas
reject malformed wallets and rounds with the field named; the status subresource is separate."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import (  # noqa: E402
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException  # noqa: E402

pytestmark = pytest.mark.k8s

GROUP, VERSION = "gpualloc.io", "v1alpha1"


@pytest.fixture(scope="module")
def admin(api_client: Callable[[str], Any], control_plane: Any) -> Any:
    return api_client(control_plane.admin_token)


@pytest.fixture(scope="module")
def crds(gpualloc_crds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart's CRDs, created and established by the session fixture."""
    return gpualloc_crds


@pytest.fixture()
def namespace(admin: Any) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    yield name
    CoreV1Api(admin).delete_namespace(name)


def _wallet(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Wallet",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crds_are_accepted_and_established(crds: list[dict[str, Any]]) -> None:
    """The API server takes both CRDs of the chart (structural schemas, printer columns)."""
    assert {d["spec"]["names"]["kind"] for d in crds} == {"Wallet", "AllocationRound"}


def test_valid_wallet_gets_defaults(admin: Any, crds: Any, namespace: str) -> None:
    """A wallet with only a balance is stored with the schema's defaults filled in."""
    api = CustomObjectsApi(admin)
    got = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "wallets", _wallet("team-a", {"balance": 1000})
    )
    assert got["spec"] == {"balance": 1000, "incomePerPeriod": 0, "period": "24h", "priority": 0}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"balance": -5}, "spec.balance"),
        ({}, "spec.balance"),
        ({"balance": "lots"}, "spec.balance"),
        ({"balance": 10, "priority": 5000}, "spec.priority"),
        ({"balance": 10, "period": "daily"}, "spec.period"),
        ({"balance": 1e13}, "spec.balance"),
    ],
)
def test_malformed_wallet_is_rejected_naming_the_field(
    admin: Any, crds: Any, namespace: str, spec: dict[str, Any], field: str
) -> None:
    """The CRD schema rejects a bad wallet with 422 and names the offending field."""
    api = CustomObjectsApi(admin)
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "wallets", _wallet("bad", spec)
        )
    assert err.value.status == 422
    assert field in err.value.body


def test_round_rejects_unknown_solver(admin: Any, crds: Any, namespace: str) -> None:
    """An AllocationRound must name a known solver and payment rule."""
    api = CustomObjectsApi(admin)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AllocationRound",
        "metadata": {"name": "r-1"},
        "spec": {"solver": "magic", "paymentRule": "critical"},
    }
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "allocationrounds", body)
    assert err.value.status == 422 and "spec.solver" in err.value.body
    body["spec"]["solver"] = "greedy"
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "allocationrounds", body)


def test_wallet_status_is_a_subresource_with_a_keyed_ledger(
    admin: Any, crds: Any, namespace: str
) -> None:
    """Spec writes cannot set status; status writes go through /status, and the ledger is a map
    keyed by round (a duplicate round id is refused)."""
    api = CustomObjectsApi(admin)
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "wallets", _wallet("w", {"balance": 100})
    )
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "wallets", "w", {"status": {"spent": 99}}
    )
    assert "status" not in api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "wallets", "w"
    )
    ledger = [{"round": "r-1", "amount": 10}]
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "wallets", "w", {"status": {"spent": 10, "ledger": ledger}}
    )
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "wallets", "w")
    assert got["status"]["ledger"] == ledger
    twice = {"status": {"ledger": ledger + ledger}}
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "wallets", "w", twice)
    assert err.value.status == 422
