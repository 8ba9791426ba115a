"""Tests of allocator.model: catalog facts, validation with field paths, JSON round trips."""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from typing import Any

import jsonschema
import pytest

from allocator.examples import demo_problem
from allocator.model import (
    CATALOG,
    Alternative,
    Bid,
    Gpu,
    MigInstance,
    Node,
    Problem,
    ProblemError,
    Unit,
    Wallet,
    problem_from_dict,
    problem_to_dict,
)


def _schema(which: str) -> dict[str, Any]:
    text = resources.files("allocator.model").joinpath("schema", f"{which}.schema.json")
    return json.loads(text.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _base() -> dict[str, Any]:
    return problem_to_dict(demo_problem())


def _error(data: dict[str, Any]) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        problem_from_dict(data)
    return info.value


def test_catalog_has_every_model_the_issue_names() -> None:
    """Every MIG-capable and whole-only model the spec lists resolves in the catalog."""
    mig = [
        "A100-SXM4-40GB",
        "A100-SXM4-80GB",
        "A800",
        "H100-80GB",
        "H800",
        "H100-94GB",
        "H200-141GB",
        "B200-180GB",
        "A30-24GB",
    ]
    whole = ["T4", "V100-16GB", "V100-32GB", "P100", "A10", "L4", "L40S"]
    assert all(CATALOG[m].mig_capable for m in mig)
    assert not any(CATALOG[m].mig_capable for m in whole)


def test_catalog_mig_geometry_matches_nvidia_tables() -> None:
    """Profile sizes, legal starts and unit counts follow NVIDIA's published placement tables."""
    a100 = CATALOG["A100-SXM4-40GB"]
    assert a100.mig_units == 8 and a100.compute_units == 7
    p3 = a100.profile("3g.20gb")
    p4 = a100.profile("4g.20gb")
    p1 = a100.profile("1g.5gb")
    assert p3 is not None and p3.size == 4 and p3.starts == (0, 4)
    assert p4 is not None and p4.starts == (0,)
    assert p1 is not None and p1.starts == tuple(range(7)) and p1.max_count == 7
    h200 = CATALOG["H200-141GB"]
    assert [p.name for p in h200.profiles if not p.media][-1] == "7g.141gb"
    a30 = CATALOG["A30"]
    assert a30.mig_units == 4 and a30.profile("2g.12gb") is not None
    assert a30.profile("2g.12gb").starts == (0, 2)  # type: ignore[union-attr]


def test_demo_problem_round_trips_through_json_and_matches_schema() -> None:
    """to_dict -> JSON -> from_dict gives an equal problem, and the schema accepts it."""
    data = json.loads(json.dumps(_base()))
    jsonschema.validate(data, _schema("problem"))
    again = problem_from_dict(data)
    assert problem_to_dict(again) == data


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda d: d["bids"][0]["alternatives"][0].__setitem__("value", -1),
            "bids[0].alternatives[0].value",
        ),
        (
            lambda d: d["bids"][1]["alternatives"][0].__setitem__("value", math.nan),
            "bids[1].alternatives[0].value",
        ),
        (lambda d: d["bids"][1].__setitem__("id", d["bids"][0]["id"]), "bids[1].id"),
        (lambda d: d["bids"][2].__setitem__("wallet", "nobody"), "bids[2].wallet"),
        (
            lambda d: d["nodes"][0]["gpus"][0].__setitem__("model", "Z9000"),
            "nodes[0].gpus[0].model",
        ),
        (
            lambda d: d["bids"][1]["alternatives"][0]["unit"].__setitem__("profile", "5g.50gb"),
            "bids[1].alternatives[0].unit.profile",
        ),
        (
            lambda d: d["nodes"][0]["gpus"][1].__setitem__(
                "mig_instances", [{"profile": "3g.40gb", "start": 2}]
            ),
            "nodes[0].gpus[1].mig_instances",
        ),
        (
            lambda d: (
                d["incumbents"][1]["placements"][0].__setitem__("mig_start", 0)
                or d["nodes"][0]["gpus"][0].__setitem__(
                    "mig_instances", [{"profile": "4g.40gb", "start": 0}]
                )
            ),
            "incumbents[1].placements[0]",
        ),
        (
            lambda d: d["incumbents"].append({**copy.deepcopy(d["incumbents"][0]), "id": "twin"}),
            "incumbents[2].placements[0].gpus",
        ),
        (
            lambda d: d["bids"][0]["alternatives"][0].__setitem__("locality", "datacenter"),
            "bids[0].alternatives[0].locality",
        ),
        (
            lambda d: (
                [n.pop("rack") for n in d["nodes"]]
                and d["bids"][0]["alternatives"][0].__setitem__("locality", "rack")
            ),
            "bids[0].alternatives[0].locality",
        ),
        (lambda d: d["wallets"][0].__setitem__("balance", "lots"), "wallets[0].balance"),
        (lambda d: d["bids"][0].__setitem__("colour", "red"), "bids[0].colour"),
        (
            lambda d: d["nodes"][1]["gpus"][2].__setitem__("used_milli", 100),
            "nodes[1].gpus[2].used_milli",
        ),
        (lambda d: d.__setitem__("reserve_prices", {"Z9000": 1}), "reserve_prices.Z9000"),
        (lambda d: d["nodes"][0].__setitem__("rack", []), "nodes[0].rack"),
    ],
    ids=[
        "negative-value",
        "nan-value",
        "duplicate-bid-id",
        "missing-wallet",
        "unknown-model",
        "unknown-profile",
        "illegal-start",
        "overlapping-mig",
        "overlapping-incumbents",
        "unknown-locality",
        "locality-without-racks",
        "balance-not-a-number",
        "unknown-field",
        "used-milli-on-whole-gpu",
        "reserve-unknown-model",
        "rack-not-a-string",
    ],
)
def test_bad_input_names_the_field(mutate: Any, path: str) -> None:
    """Each kind of malformed input raises ProblemError whose path names the offending field."""
    data = _base()
    mutate(data)
    err = _error(data)
    assert err.path == path, str(err)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["bids"][3]["alternatives"][0].__setitem__("replicas", 0),
            "bids[3].alternatives[0].replicas: 0 is less than the minimum of 1",
        ),
        (lambda d: d["bids"][0].pop("wallet"), "bids[0].wallet: is required"),
        (lambda d: d.__setitem__("colour", 1), "colour: unknown field"),
        (lambda d: d.__setitem__("nodes", {}), "nodes: must be a list, got object"),
        (lambda d: d["nodes"][0].__setitem__("rack", 7), "nodes[0].rack: must be a string or null"),
        (
            lambda d: d["nodes"][0].__setitem__("labels", {"a.io/b": 1}),
            "nodes[0].labels.a.io/b: must be a string, got number",
        ),
    ],
    ids=["below-minimum", "missing-key", "unknown-top-level", "wrong-type", "null-or", "label"],
)
def test_schema_errors_name_the_field(mutate: Any, message: str) -> None:
    """What the JSON Schema catches is reported with the field's path and a short reason."""
    data = _base()
    mutate(data)
    assert str(_error(data)).startswith(message)


def test_a_file_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ProblemError, match="must be an object, got list"):
        problem_from_dict([])


def test_api_construction_validates_too() -> None:
    """Building objects directly (not from JSON) runs the same checks."""
    with pytest.raises(ProblemError, match="milli"):
        Unit("share", milli=1000)
    with pytest.raises(ProblemError, match="replicas"):
        Alternative(1.0, Unit("whole"), replicas=0)
    with pytest.raises(ProblemError, match=r"bids\[0\].wallet"):
        Problem(nodes=(), bids=(Bid("b", "a", "w", (Alternative(1.0, Unit("whole")),)),))
    with pytest.raises(ProblemError, match="mode"):
        Problem(nodes=(Node("n", gpus=(Gpu(0, "T4", "mig"),)),))


def test_mig_instances_legal_layouts_accepted() -> None:
    """4g@0 with 3g@4, and seven 1g instances, are legal outside layouts."""
    gpus = (
        Gpu(
            0,
            "A100-SXM4-40GB",
            "mig",
            mig_instances=(MigInstance("4g.20gb", 0), MigInstance("3g.20gb", 4)),
        ),
        Gpu(
            1,
            "A100-SXM4-40GB",
            "mig",
            mig_instances=tuple(MigInstance("1g.5gb", s) for s in range(7)),
        ),
    )
    p = Problem(nodes=(Node("n", gpus=gpus),), wallets=(Wallet("w", 1.0),))
    assert p.gpu_count == 2


def test_mig_3g0_and_4g0_rejected_together() -> None:
    """3g@0 and 4g@0 overlap, so a GPU holding both is rejected."""
    g = Gpu(
        0,
        "A100-SXM4-40GB",
        "mig",
        mig_instances=(MigInstance("4g.20gb", 0), MigInstance("3g.20gb", 0)),
    )
    with pytest.raises(ProblemError, match="overlaps"):
        Problem(nodes=(Node("n", gpus=(g,)),))


def test_unknown_model_accepted_through_extra_models() -> None:
    """A model the catalog lacks is usable once given by name and memory."""
    data = {
        "nodes": [{"name": "n", "gpus": [{"index": 0, "model": "G2"}]}],
        "extra_models": [{"name": "G2", "memory_gb": 16}],
    }
    p = problem_from_dict(data)
    assert p.model("G2").memory_gb == 16
    assert _error({"nodes": data["nodes"]}).path == "nodes[0].gpus[0].model"


def test_not_an_object_is_a_clear_error() -> None:
    """A JSON list where an object belongs is reported with its path, not a crash."""
    err = _error({"nodes": [[]]})
    assert err.path == "nodes[0]" and "object" in err.message


def test_problem_schema_uses_only_keywords_draft7_shares() -> None:
    """The fast validator compiles the schema as draft 7 (allocator.model.serialize): every
    keyword the schema uses must mean the same in draft 7 and 2020-12."""
    import json
    from importlib import resources

    shared = {
        "$schema", "$id", "$ref", "$defs", "title", "description", "type", "properties",
        "required", "additionalProperties", "items", "minItems", "maxItems", "uniqueItems",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
        "enum", "const", "pattern", "anyOf", "oneOf", "allOf", "not", "default", "examples",
    }  # fmt: skip
    text = resources.files("allocator.model").joinpath("schema", "problem.schema.json")
    used: set[str] = set()

    def walk(node: object, in_properties: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_properties:
                    used.add(key)
                walk(value, in_properties=(key in ("properties", "$defs") and not in_properties))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(text.read_text(encoding="utf-8")))
    assert used <= shared, used - shared
