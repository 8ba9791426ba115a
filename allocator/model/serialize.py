"""Problem and Result <-> plain JSON-able dicts, with errors that name the field path.

The shapes are described by ``allocator/model/schema/*.schema.json`` and ``docs/file-format.md``.
A problem is first validated against its JSON Schema (with ``jsonschema``: types, required and
unknown keys, ranges, enums), then built into the model, whose constructors check the meaning
(references between objects, MIG layouts, occupancy). A result is read by structure here and
judged by :func:`allocator.verify`. Unknown keys are rejected (a typo must not be silently
ignored).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from allocator.model.catalog import GpuModel, whole_gpu_model
from allocator.model.errors import ProblemError
from allocator.model.problem import (
    Alternative,
    Bid,
    Gpu,
    Incumbent,
    MigInstance,
    Node,
    Placement,
    Problem,
    Unit,
    Wallet,
)
from allocator.model.result import GpuLayout, Loss, PaymentAudit, Result, Winner

__all__ = [
    "load_problem",
    "load_result",
    "placement_to_dict",
    "problem_from_dict",
    "problem_to_dict",
    "result_from_dict",
    "result_to_dict",
]

T = TypeVar("T")

#: JSON Schema type names as the messages say them.
_TYPE_NAMES = {"object": "an object", "array": "a list", "integer": "an integer", "null": "null"}
_MAX_MESSAGE = 200


@functools.cache
def _validator(which: str) -> Any:
    """The Draft 2020-12 validator of ``schema/<which>.schema.json`` (imported on first use):
    the reference, used to name what is wrong."""
    import jsonschema

    return jsonschema.Draft202012Validator(_schema(which))


@functools.cache
def _fast_check(which: str) -> Any:
    """The same schema compiled to Python by ``fastjsonschema`` (about 20 times faster than
    ``jsonschema`` on a 3,000-bid problem), used to accept valid files quickly. It knows drafts
    up to 7, and the schema uses only keywords whose meaning draft 7 shares with 2020-12
    (``tests/test_model.py`` checks that), so it is compiled as draft 7."""
    import fastjsonschema

    schema = dict(_schema(which))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


def _schema(which: str) -> dict[str, Any]:
    text = resources.files("allocator.model").joinpath("schema", f"{which}.schema.json")
    loaded: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return loaded


def _field_path(parts: Iterable[str | int]) -> str:
    """``["bids", 3, "alternatives", 0, "replicas"]`` -> ``bids[3].alternatives[0].replicas``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object" if isinstance(value, dict) else "other"


def _schema_error(error: Any) -> ProblemError:
    """A ``jsonschema`` error as a ProblemError naming the field: a missing or unknown key is
    named itself, any other error the value it is about."""
    parts = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = next(k for k in error.validator_value if k not in instance)
        return ProblemError(_field_path([*parts, missing]), "is required")
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        unknown = next((k for k in instance if k not in known), None)
        if unknown is not None:
            return ProblemError(_field_path([*parts, str(unknown)]), "unknown field")
    if error.validator == "type":
        wanted = error.validator_value
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        said = " or ".join(_TYPE_NAMES.get(n, f"a {n}") for n in names)
        return ProblemError(_field_path(parts), f"must be {said}, got {_json_type(instance)}")
    message = str(error.message)
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return ProblemError(_field_path(parts), message)


def _check_schema(which: str, data: Any) -> None:
    """Raise the most relevant schema violation of ``data`` (``jsonschema.exceptions.best_match``)
    as a ProblemError; return when there is none."""
    import fastjsonschema
    from jsonschema.exceptions import best_match

    try:
        _fast_check(which)(data)
        return
    except fastjsonschema.JsonSchemaException:
        pass  # invalid: let the reference validator say what is wrong, and where
    error = best_match(_validator(which).iter_errors(data))
    if error is not None:
        raise _schema_error(error)


def _obj(
    path: str, data: Any, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    """A result's object: required and known keys checked (problems: by their schema)."""
    if not isinstance(data, Mapping):
        raise ProblemError(path, f"must be an object, got {type(data).__name__}")
    for key in required:
        if key not in data:
            raise ProblemError(f"{path}.{key}" if path else key, "is required")
    for key in data:
        if key not in required and key not in optional:
            raise ProblemError(f"{path}.{key}" if path else str(key), "unknown field")
    return dict(data)


def _list(path: str, data: Any, item: Callable[[str, Any], T]) -> tuple[T, ...]:
    if not isinstance(data, list):
        raise ProblemError(path, f"must be a list, got {type(data).__name__}")
    return tuple(item(f"{path}[{i}]", x) for i, x in enumerate(data))


def _build(path: str, cls: Callable[..., T], **kwargs: Any) -> T:
    """Construct ``cls`` and put ``path`` in front of the field its validation names."""
    try:
        return cls(**kwargs)
    except ProblemError as e:
        raise e.under(path) from None
    except TypeError as e:  # e.g. a list where a number belongs, caught by comparisons
        raise ProblemError(path, f"wrong type: {e}") from None


# The problem's builders below take data its schema has accepted: keys and types are right.


def _each(path: str, data: list[Any], item: Callable[[str, Any], T]) -> tuple[T, ...]:
    return tuple(item(f"{path}[{i}]", x) for i, x in enumerate(data))


def _mig_instance(path: str, d: dict[str, Any]) -> MigInstance:
    return _build(path, MigInstance, **d)


def _gpu(path: str, d: dict[str, Any]) -> Gpu:
    mig = _each(f"{path}.mig_instances", d.get("mig_instances", []), _mig_instance)
    layout = d.get("layout")
    if layout is not None:
        layout = _each(f"{path}.layout", layout, _mig_instance)
    return _build(path, Gpu, **{**d, "mig_instances": mig, "layout": layout})


def _node(path: str, d: dict[str, Any]) -> Node:
    return _build(path, Node, **{**d, "gpus": _each(f"{path}.gpus", d.get("gpus", []), _gpu)})


def _wallet(path: str, d: dict[str, Any]) -> Wallet:
    return _build(path, Wallet, **d)


def _alternative(path: str, d: dict[str, Any]) -> Alternative:
    unit = _build(f"{path}.unit", Unit, **d["unit"])
    return _build(path, Alternative, **{**d, "unit": unit, "models": tuple(d.get("models", []))})


def _bid(path: str, d: dict[str, Any]) -> Bid:
    alternatives = _each(f"{path}.alternatives", d["alternatives"], _alternative)
    return _build(path, Bid, **{**d, "alternatives": alternatives})


def _placement(path: str, d: Any) -> Placement:
    """A placement of a problem's incumbent or of a result's winner."""
    d = _obj(path, d, ("node", "gpus"), ("mig_profile", "mig_start", "milli"))
    if not isinstance(d["gpus"], list):
        raise ProblemError(f"{path}.gpus", "must be a list of GPU indices")
    d["gpus"] = tuple(d["gpus"])
    return _build(path, Placement, **d)


def _incumbent(path: str, d: dict[str, Any]) -> Incumbent:
    placements = _each(f"{path}.placements", d["placements"], _placement)
    return _build(path, Incumbent, **{**d, "placements": placements})


def _extra_model(path: str, d: dict[str, Any]) -> GpuModel:
    aliases = d.get("aliases", [])
    try:
        return whole_gpu_model(
            d["name"], d["memory_gb"], *aliases, whole_equivalent=d.get("whole_equivalent", 1.0)
        )
    except ProblemError as e:
        raise e.under(path) from None


def problem_from_dict(data: Any) -> Problem:
    """Build and validate a :class:`Problem` from its JSON form: its JSON Schema first, then the
    model's own checks; :class:`ProblemError` names the field either way."""
    _check_schema("problem", data)
    return _build(
        "",
        Problem,
        nodes=_each("nodes", data["nodes"], _node),
        wallets=_each("wallets", data.get("wallets", []), _wallet),
        bids=_each("bids", data.get("bids", []), _bid),
        incumbents=_each("incumbents", data.get("incumbents", []), _incumbent),
        reserve_prices=dict(data.get("reserve_prices", {})),
        extra_models=_each("extra_models", data.get("extra_models", []), _extra_model),
        round_id=data.get("round_id", "round"),
        reconfigure_cost=data.get("reconfigure_cost", 0.0),
    )


def placement_to_dict(p: Placement) -> dict[str, Any]:
    """The JSON form of one placement."""
    out: dict[str, Any] = {"node": p.node, "gpus": list(p.gpus)}
    if p.mig_profile is not None:
        out["mig_profile"] = p.mig_profile
        out["mig_start"] = p.mig_start
    if p.milli:
        out["milli"] = p.milli
    return out


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """The JSON form of ``problem`` (round-trips through :func:`problem_from_dict`)."""

    def gpu(g: Gpu) -> dict[str, Any]:
        out: dict[str, Any] = {"index": g.index, "model": g.model, "mode": g.mode}
        if g.nvlink is not None:
            out["nvlink"] = g.nvlink
        if g.mig_instances:
            out["mig_instances"] = [
                {"profile": x.profile, "start": x.start} for x in g.mig_instances
            ]
        if g.used_milli:
            out["used_milli"] = g.used_milli
        if g.layout is not None:
            out["layout"] = [{"profile": x.profile, "start": x.start} for x in g.layout]
        if not g.recarvable:
            out["recarvable"] = False
        return out

    def node(n: Node) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": n.name,
            "cpu_milli": n.cpu_milli,
            "memory_mib": n.memory_mib,
            "gpus": [gpu(g) for g in n.gpus],
        }
        for key in ("rack", "zone"):
            if getattr(n, key) is not None:
                out[key] = getattr(n, key)
        if n.labels:
            out["labels"] = dict(n.labels)
        return out

    def alternative(a: Alternative) -> dict[str, Any]:
        unit: dict[str, Any] = {"kind": a.unit.kind}
        if a.unit.kind == "whole":
            unit["gpus"] = a.unit.gpus
        elif a.unit.kind == "mig":
            unit["profile"] = a.unit.profile
        else:
            unit["milli"] = a.unit.milli
        out: dict[str, Any] = {"value": a.value, "unit": unit, "replicas": a.replicas}
        if a.cpu_milli:
            out["cpu_milli"] = a.cpu_milli
        if a.memory_mib:
            out["memory_mib"] = a.memory_mib
        if a.models:
            out["models"] = list(a.models)
        if a.min_gpu_memory_gb:
            out["min_gpu_memory_gb"] = a.min_gpu_memory_gb
        out["locality"] = a.locality
        return out

    def incumbent(x: Incumbent) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": x.id,
            "bidder": x.bidder,
            "value": x.value,
            "placements": [placement_to_dict(p) for p in x.placements],
            "preemptible": x.preemptible,
            "preemption_cost": x.preemption_cost,
        }
        if x.cpu_milli:
            out["cpu_milli"] = x.cpu_milli
        if x.memory_mib:
            out["memory_mib"] = x.memory_mib
        if x.wallet is not None:
            out["wallet"] = x.wallet
        return out

    return {
        "round_id": problem.round_id,
        "nodes": [node(n) for n in problem.nodes],
        "wallets": [{"name": w.name, "balance": w.balance} for w in problem.wallets],
        "bids": [
            {
                "id": b.id,
                "bidder": b.bidder,
                "wallet": b.wallet,
                "alternatives": [alternative(a) for a in b.alternatives],
            }
            for b in problem.bids
        ],
        "incumbents": [incumbent(x) for x in problem.incumbents],
        "reserve_prices": dict(problem.reserve_prices),
        "extra_models": [
            {"name": m.name, "memory_gb": m.memory_gb, "aliases": list(m.aliases)}
            | ({"whole_equivalent": m.whole_equivalent} if m.whole_equivalent != 1.0 else {})
            for m in problem.extra_models
        ],
    } | ({"reconfigure_cost": problem.reconfigure_cost} if problem.reconfigure_cost else {})


def result_to_dict(result: Result) -> dict[str, Any]:
    """The JSON form of ``result``."""
    return (
        {
            "round_id": result.round_id,
            "solver": result.solver,
            "payment_rule": result.payment_rule,
            "status": result.status,
            "welfare": result.welfare,
            "revenue": result.revenue,
            "winners": [
                {
                    "bid_id": w.bid_id,
                    "alternative": w.alternative,
                    "value": w.value,
                    "payment": w.payment,
                    "placements": [placement_to_dict(p) for p in w.placements],
                }
                for w in result.winners
            ],
            "evicted": list(result.evicted),
            "losers": [
                {"bid_id": x.bid_id, "reason": x.reason, "detail": dict(x.detail)}
                for x in result.losers
            ],
            "utilisation": dict(result.utilisation),
            "clearing_prices": dict(result.clearing_prices),
            "stats": dict(result.stats),
        }
        | ({"layouts": [_layout_to_dict(x) for x in result.layouts]} if result.layouts else {})
        | ({"audit": audit_to_dict(result.audit)} if result.audit is not None else {})
    )


_AUDIT_FIELDS = (
    "rule",
    "winners",
    "sampled",
    "replayed",
    "mean_err",
    "max_err",
    "within_1pct",
    "overcharged",
    "revenue_ratio",
    "time_ms",
)


def audit_to_dict(audit: PaymentAudit) -> dict[str, Any]:
    """The JSON form of a payment audit (also an AllocationRound's ``status.audit``)."""
    return {name: getattr(audit, name) for name in _AUDIT_FIELDS}


def _layout_to_dict(x: GpuLayout) -> dict[str, Any]:
    return {
        "node": x.node,
        "gpu": x.gpu,
        "instances": [{"profile": i.profile, "start": i.start} for i in x.instances],
        "recarved": x.recarved,
    }


def result_from_dict(data: Any) -> Result:
    """Read a :class:`Result` from its JSON form (structure only; use ``verify`` for meaning)."""
    d = _obj(
        "",
        data,
        (
            "round_id",
            "solver",
            "payment_rule",
            "status",
            "winners",
            "evicted",
            "losers",
            "welfare",
            "revenue",
        ),
        ("utilisation", "clearing_prices", "stats", "layouts", "audit", "$schema"),
    )

    def winner(path: str, w: Any) -> Winner:
        w = _obj(path, w, ("bid_id", "alternative", "value", "payment", "placements"), ())
        w["placements"] = _list(f"{path}.placements", w["placements"], _placement)
        return _build(path, Winner, **w)

    def loss(path: str, x: Any) -> Loss:
        return _build(path, Loss, **_obj(path, x, ("bid_id", "reason"), ("detail",)))

    def layout(path: str, x: Any) -> GpuLayout:
        x = _obj(path, x, ("node", "gpu", "instances", "recarved"), ())
        x["instances"] = _list(f"{path}.instances", x["instances"], _mig_instance)
        return _build(path, GpuLayout, **x)

    if not isinstance(d["evicted"], list):
        raise ProblemError("evicted", "must be a list of incumbent ids")
    return Result(
        round_id=d["round_id"],
        solver=d["solver"],
        payment_rule=d["payment_rule"],
        status=d["status"],
        winners=_list("winners", d["winners"], winner),
        evicted=tuple(d["evicted"]),
        losers=_list("losers", d["losers"], loss),
        welfare=d["welfare"],
        revenue=d["revenue"],
        utilisation=d.get("utilisation", {}),
        clearing_prices=d.get("clearing_prices", {}),
        stats=d.get("stats", {}),
        layouts=_list("layouts", d.get("layouts", []), layout),
        audit=None
        if d.get("audit") is None
        else _build("audit", PaymentAudit, **_obj("audit", d["audit"], _AUDIT_FIELDS, ())),
    )


def _read_json(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ProblemError("", f"cannot read {path}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemError("", f"{path} is not valid JSON: {e}") from None


def load_problem(path: str | Path) -> Problem:
    """Read and validate a problem JSON file."""
    return problem_from_dict(_read_json(path))


def load_result(path: str | Path) -> Result:
    """Read a result JSON file."""
    return result_from_dict(_read_json(path))
