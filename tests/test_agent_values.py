"""deploy/vcluster/agent-values.yaml against vcluster v0.30.0 itself: its values schema (from the
Go module cache), the keys that make an agent's virtual cluster the way the auction needs it, and
the real chart rendered with these values by the project's `helm` (scripts/build-helm)."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "deploy" / "vcluster" / "agent-values.yaml"
VCLUSTER_VERSION = "v0.30.0"
MODULE = (
    Path(os.environ.get("GOMODCACHE") or Path.home() / "go" / "pkg" / "mod")
    / "github.com"
    / "loft-sh"
    / f"vcluster@{VCLUSTER_VERSION}"
)
SCHEMA = MODULE / "chart" / "values.schema.json"


def _values() -> dict[str, Any]:
    data = yaml.safe_load(VALUES.read_text())
    assert isinstance(data, dict)
    return data


def _schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        pytest.skip(
            f"vcluster {VCLUSTER_VERSION}'s module is not in the Go module cache ({SCHEMA} "
            "missing): `go mod download github.com/loft-sh/vcluster@v0.30.0`"
        )
    data = json.loads(SCHEMA.read_text())
    assert isinstance(data, dict)
    return data


def _at(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def test_values_match_the_v0_30_schema() -> None:
    """The file is valid under vcluster v0.30.0's values schema (Draft 2020-12, no unknown keys)."""
    import jsonschema

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(_values()))
    assert errors == [], [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("sync.toHost.pod", {"enabled": True}),  # a misspelt key
        ("controlPlane.advanced.virtualScheduler.enabled", "no"),  # a wrong type
    ],
)
def test_the_schema_catches_a_wrong_key(path: str, bad: Any) -> None:
    """The schema check above has teeth: a misspelt key or a wrong type is an error."""
    import jsonschema

    schema = _schema()
    values = copy.deepcopy(_values())
    *parents, last = path.split(".")
    _at(values, ".".join(parents))[last] = bad
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(values))


@pytest.mark.parametrize(
    ("path", "want"),
    [
        # The agent's pods go to the host, unscheduled, keeping spec.schedulerName.
        ("sync.toHost.pods.enabled", True),
        ("sync.toHost.pods.hybridScheduling.enabled", False),
        ("controlPlane.distro.k8s.enabled", True),
        ("controlPlane.distro.k8s.scheduler.enabled", False),
        ("controlPlane.advanced.virtualScheduler.enabled", False),
        # Fake nodes: nothing cluster-wide is read.
        ("sync.fromHost.nodes.enabled", False),
        # The allocator's events reach the agent.
        ("sync.fromHost.events.enabled", True),
        # What `agent create` makes, the chart does not (least privilege, no name clash).
        ("rbac.role.enabled", False),
        ("rbac.clusterRole.enabled", False),
        ("rbac.enableVolumeSnapshotRules.enabled", False),
        ("controlPlane.advanced.serviceAccount.enabled", False),
        ("controlPlane.advanced.workloadServiceAccount.enabled", False),
        ("controlPlane.service.enabled", False),
        ("controlPlane.statefulSet.highAvailability.replicas", 1),
    ],
)
def test_the_keys_that_matter(path: str, want: Any) -> None:
    """Each setting the host side relies on is set explicitly to what it needs."""
    assert _at(_values(), path) == want


def test_synced_kinds_match_the_syncer_role() -> None:
    """Every kind synced to the host is one the syncer's Role may write, and every kind it may
    not write is not synced (sync.toHost.* against allocator.cluster.agents.SYNCER_RULES);
    outside the core group it may only read EndpointSlices."""
    pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
    from allocator.cluster.agents import SYNCER_RULES

    writes = {
        resource
        for rule, _ in SYNCER_RULES
        if "create" in rule["verbs"]
        for resource in rule["resources"]
    }
    kinds = {
        "pods": "pods",
        "services": "services",
        "configMaps": "configmaps",
        "secrets": "secrets",
        "endpoints": "endpoints",
        "persistentVolumeClaims": "persistentvolumeclaims",
        "serviceAccounts": "serviceaccounts",
    }
    to_host = _values()["sync"]["toHost"]
    for key, resource in kinds.items():
        assert to_host[key]["enabled"] == (resource in writes), key
    assert not to_host["endpointSlices"]["enabled"]
    for rule, _ in SYNCER_RULES:
        if rule["apiGroups"] != [""]:  # outside the core group, reading EndpointSlices only
            assert rule["apiGroups"] == ["discovery.k8s.io"], rule
            assert rule["resources"] == ["endpointslices"], rule
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    every = {r for rule, _ in SYNCER_RULES for r in rule["resources"]}
    assert not every & {"pods/binding", "pods/eviction", "nodes", "namespaces", "serviceaccounts"}


def _helm() -> Path:
    out = subprocess.run(
        [str(REPO / "scripts" / "build-helm"), "--print-bin-dir"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    helm = Path(out.strip()) / "helm"
    if not helm.is_file():
        pytest.skip(f"helm not built ({helm} missing): run scripts/build-helm (needs Go)")
    if not (MODULE / "chart" / "Chart.yaml").is_file():
        pytest.skip(f"vcluster {VCLUSTER_VERSION}'s chart is not in the Go module cache")
    return helm


def test_the_v0_30_chart_renders_only_what_agent_create_does_not_make() -> None:
    """`helm template` of vcluster v0.30.0's own chart with these values (helm checks them
    against the schema too) renders no ServiceAccount, Role, ClusterRole or Service NAME (those
    are `agent create`'s), runs the StatefulSet as the syncer's ServiceAccount vc-NAME with the
    pod labels our Service NAME selects, and configures the syncer with no virtual scheduler and
    the kubeconfig exported for the Service NAME.vc-NAME."""
    pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
    from allocator.cluster.agents import AgentSpec, agent_objects, syncer_account

    helm = _helm()
    name, ns = "alice", "vc-alice"
    out = subprocess.run(
        [
            str(helm),
            "template",
            name,
            str(MODULE / "chart"),
            "--namespace",
            ns,
            "-f",
            str(VALUES),
            "--set",
            f"exportKubeConfig.server=https://{name}.{ns}:443",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert rendered == {
        ("Secret", f"vc-config-{name}"),
        ("Service", f"{name}-headless"),
        ("StatefulSet", name),
    }
    ours = {(o["kind"], o["metadata"]["name"]) for o in agent_objects(AgentSpec(name, 1.0))}
    assert not rendered & ours  # no object both make
    (stateful,) = (d for d in docs if d["kind"] == "StatefulSet")
    pod = stateful["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == syncer_account(name)
    (service,) = (o for o in agent_objects(AgentSpec(name, 1.0)) if o["kind"] == "Service")
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (secret,) = (d for d in docs if d["kind"] == "Secret")
    config = yaml.safe_load(base64.b64decode(secret["data"]["config.yaml"]))
    assert config["controlPlane"]["distro"]["k8s"]["scheduler"]["enabled"] is False
    assert config["controlPlane"]["advanced"]["virtualScheduler"]["enabled"] is False
    assert config["sync"]["toHost"]["pods"]["enabled"] is True
    assert config["exportKubeConfig"]["server"] == f"https://{name}.{ns}:443"
