"""What the allocator tells an agent after each round: the ``gpualloc-market`` ConfigMap.

Pure data and its (de)serialisation, no I/O. The allocator writes one ConfigMap
(:data:`MARKET_CONFIGMAP` in :data:`MARKET_NAMESPACE`) into each agent's own cluster per round;
the agent SDK (``allocator.agent``) reads it. Every data value is a string; the structured ones
hold JSON:

====================  =========================================================================
key                   value
====================  =========================================================================
``agent``             the agent's name (plain string)
``round``             the id of the last round (plain string)
``updated``           when it was written, RFC 3339 UTC (plain string, ``2026-12-07T10:00:00Z``)
``wallet``            JSON ``{"name", "balance", "incomePerPeriod", "period", "priority",
                      "spent", "available"}`` (``period`` a Go duration or null), or ``null``
``prices``            JSON list, oldest first, at most :data:`MAX_PRICE_RECORDS`:
                      ``{"round", "time", "clearing": {model: price per GPU-equivalent},
                      "utilisation": {model: fraction 0..1}}``
``outcomes``          JSON ``{"<namespace>/<pod>": {"round", "outcome", "bid", "payment",
                      "node", "gpus", "detail", "message"}}``, pods named as in the agent's
                      cluster; ``outcome`` one of :data:`OUTCOMES`
====================  =========================================================================

:meth:`MarketView.from_configmap_data` validates and raises :class:`ProblemError` whose ``path``
names the key (``data.wallet.available``, ``data.prices[3].clearing.H100-80GB``). Keys it does
not know, at any level, are ignored, so that a newer allocator can add some.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args

from allocator.model.errors import ProblemError

__all__ = [
    "MARKET_CONFIGMAP",
    "MARKET_NAMESPACE",
    "MAX_PRICE_RECORDS",
    "OUTCOMES",
    "OUTCOME_OF_REASON",
    "MarketView",
    "Outcome",
    "PodOutcome",
    "PriceRecord",
    "WalletView",
    "format_time",
    "parse_time",
]

MARKET_CONFIGMAP = "gpualloc-market"
MARKET_NAMESPACE = "default"
MAX_PRICE_RECORDS = 20

Outcome = Literal["won", "outbid", "does_not_fit", "over_budget", "below_reserve", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
#: The reason of the allocator's Event about a pod -> the outcome it reports.
OUTCOME_OF_REASON: Mapping[str, Outcome] = MappingProxyType(
    {
        "Won": "won",
        "Outbid": "outbid",
        "DoesNotFit": "does_not_fit",
        "OverBudget": "over_budget",
        "BelowReserve": "below_reserve",
        "Skipped": "skipped",
    }
)

_GO_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+$")


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (fractional seconds only when there are any)."""
    text = t.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_time(text: Any, path: str) -> datetime:
    """An RFC 3339 time with a zone (``2026-12-07T10:00:00Z``) as an aware UTC datetime;
    ProblemError naming ``path`` otherwise."""
    if not isinstance(text, str):
        raise ProblemError(path, f"not an RFC 3339 time: {text!r}")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ProblemError(path, f"not an RFC 3339 time: {text!r}") from None
    if t.tzinfo is None:
        raise ProblemError(path, f"needs a time zone (e.g. Z): {text!r}")
    return t.astimezone(UTC)


def _time(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ProblemError(path, "needs a time zone")
        return value.astimezone(UTC)
    return parse_time(value, path)


def _number(value: Any, path: str, *, nullable: bool = False, at_most: float | None = None) -> Any:
    """A finite JSON number >= 0 (and <= ``at_most``) as a float; None when ``nullable``."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProblemError(path, f"not a number: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ProblemError(path, f"must be finite and >= 0, got {value!r}")
    if at_most is not None and value > at_most:
        raise ProblemError(path, f"must be <= {at_most:g}, got {value!r}")
    return float(value)


def _text(value: Any, path: str, *, nullable: bool = False, empty: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not (value or empty):
        raise ProblemError(path, f"not a{'' if empty else ' non-empty'} string: {value!r}")
    return value


def _prices(value: Any, path: str, *, at_most: float | None = None) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ProblemError(path, f"not an object: {value!r}")
    out: dict[str, float] = {}
    for model, price in value.items():
        _text(model, path, empty=False)
        out[model] = _number(price, f"{path}.{model}", at_most=at_most)
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class WalletView:
    """The agent's Wallet as the allocator saw it in the last round (amounts in the market's
    currency; ``period`` a Go duration such as ``24h``, or None; ``available`` what the next
    round may spend)."""

    name: str
    balance: float
    income_per_period: float
    period: str | None
    priority: int
    spent: float
    available: float

    def __post_init__(self) -> None:
        _text(self.name, "name")
        for attr, key in (
            ("balance", "balance"),
            ("income_per_period", "incomePerPeriod"),
            ("spent", "spent"),
            ("available", "available"),
        ):
            object.__setattr__(self, attr, _number(getattr(self, attr), key))
        if self.period is not None and (
            not isinstance(self.period, str) or not _GO_DURATION.match(self.period)
        ):
            raise ProblemError("period", f"not a Go duration (e.g. 24h, 1h30m): {self.period!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ProblemError("priority", f"not an integer: {self.priority!r}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the ``wallet`` key."""
        return {
            "name": self.name,
            "balance": self.balance,
            "incomePerPeriod": self.income_per_period,
            "period": self.period,
            "priority": self.priority,
            "spent": self.spent,
            "available": self.available,
        }

    @classmethod
    def from_json(cls, obj: Any) -> WalletView:
        """From the ``wallet`` key's JSON object; ProblemError naming the field."""
        o = _object(obj, "")
        return cls(
            name=_required(o, "name"),
            balance=_required(o, "balance"),
            income_per_period=o.get("incomePerPeriod", 0),
            period=o.get("period"),
            priority=o.get("priority", 0),
            spent=o.get("spent", 0),
            available=_required(o, "available"),
        )


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """One round's market signal: clearing price per GPU-equivalent and utilisation (0..1) per
    GPU model (MIG instances as models named ``<product>-MIG-<profile>``)."""

    round_id: str
    time: datetime
    clearing: Mapping[str, float] = field(default_factory=dict)
    utilisation: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text(self.round_id, "round")
        object.__setattr__(self, "time", _time(self.time, "time"))
        object.__setattr__(self, "clearing", _prices(self.clearing, "clearing"))
        object.__setattr__(self, "utilisation", _prices(self.utilisation, "utilisation", at_most=1))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one ``prices`` entry."""
        return {
            "round": self.round_id,
            "time": format_time(self.time),
            "clearing": dict(self.clearing),
            "utilisation": dict(self.utilisation),
        }

    @classmethod
    def from_json(cls, obj: Any) -> PriceRecord:
        """From one ``prices`` entry; ProblemError naming the field."""
        o = _object(obj, "")
        return cls(
            round_id=_required(o, "round"),
            time=_required(o, "time"),
            clearing=o.get("clearing", {}),
            utilisation=o.get("utilisation", {}),
        )


@dataclass(frozen=True, slots=True)
class PodOutcome:
    """What the last round decided for one pod: ``outcome``, the bid and payment (per pod; None
    where there are none), where it went (``node``, ``gpus``), the numbers of a loss
    (``detail``, e.g. the density it was outbid at) and the allocator's message."""

    round_id: str
    outcome: Outcome
    bid: float | None = None
    payment: float | None = None
    node: str | None = None
    gpus: tuple[int, ...] = ()
    detail: Mapping[str, float | str] = field(default_factory=dict)
    message: str = ""

    def __post_init__(self) -> None:
        _text(self.round_id, "round")
        if self.outcome not in OUTCOMES:
            raise ProblemError("outcome", f"must be one of {', '.join(OUTCOMES)}")
        object.__setattr__(self, "bid", _number(self.bid, "bid", nullable=True))
        object.__setattr__(self, "payment", _number(self.payment, "payment", nullable=True))
        _text(self.node, "node", nullable=True)
        if isinstance(self.gpus, str | bytes) or not isinstance(self.gpus, Sequence):
            raise ProblemError("gpus", f"not a list: {self.gpus!r}")
        for i, g in enumerate(self.gpus):
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise ProblemError(f"gpus[{i}]", f"not a GPU index (an integer >= 0): {g!r}")
        object.__setattr__(self, "gpus", tuple(self.gpus))
        if not isinstance(self.detail, Mapping):
            raise ProblemError("detail", f"not an object: {self.detail!r}")
        detail: dict[str, float | str] = {}
        for k, v in self.detail.items():
            _text(k, "detail")
            if isinstance(v, str):
                detail[k] = v
            elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ProblemError(f"detail.{k}", f"not a finite number or a string: {v!r}")
            else:
                detail[k] = v
        object.__setattr__(self, "detail", MappingProxyType(detail))
        _text(self.message, "message", empty=True)

    @property
    def lost(self) -> bool:
        """True when the pod did not win (any loss, or left out as malformed)."""
        return self.outcome != "won"

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one ``outcomes`` entry."""
        return {
            "round": self.round_id,
            "outcome": self.outcome,
            "bid": self.bid,
            "payment": self.payment,
            "node": self.node,
            "gpus": list(self.gpus),
            "detail": dict(self.detail),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, obj: Any) -> PodOutcome:
        """From one ``outcomes`` entry; ProblemError naming the field."""
        o = _object(obj, "")
        return cls(
            round_id=_required(o, "round"),
            outcome=_required(o, "outcome"),
            bid=o.get("bid"),
            payment=o.get("payment"),
            node=o.get("node"),
            gpus=o.get("gpus", []),
            detail=o.get("detail", {}),
            message=o.get("message", ""),
        )


@dataclass(frozen=True)
class MarketView:
    """The whole ConfigMap: who, which round, the wallet, recent prices (oldest first, at most
    :data:`MAX_PRICE_RECORDS`) and the outcome of each of the agent's pods in the last round
    (keyed ``namespace/name`` as in the agent's cluster)."""

    agent: str
    round_id: str
    updated: datetime
    wallet: WalletView | None = None
    prices: tuple[PriceRecord, ...] = ()
    outcomes: Mapping[str, PodOutcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _text(self.agent, "agent")
        _text(self.round_id, "round")
        object.__setattr__(self, "updated", _time(self.updated, "updated"))
        if self.wallet is not None and not isinstance(self.wallet, WalletView):
            raise ProblemError("wallet", "not a WalletView")
        prices = tuple(self.prices)
        if len(prices) > MAX_PRICE_RECORDS:
            raise ProblemError("prices", f"at most {MAX_PRICE_RECORDS} entries, got {len(prices)}")
        for i, p in enumerate(prices):
            if not isinstance(p, PriceRecord):
                raise ProblemError(f"prices[{i}]", "not a PriceRecord")
            if i and p.time < prices[i - 1].time:
                raise ProblemError(f"prices[{i}].time", "earlier than the entry before it")
        object.__setattr__(self, "prices", prices)
        outcomes: dict[str, PodOutcome] = {}
        for pod, o in dict(self.outcomes).items():
            ns, _, name = str(pod).partition("/")
            if not isinstance(pod, str) or not ns or not name or "/" in name:
                raise ProblemError("outcomes", f"key {pod!r} is not <namespace>/<name>")
            if not isinstance(o, PodOutcome):
                raise ProblemError(f"outcomes.{pod}", "not a PodOutcome")
            outcomes[pod] = o
        object.__setattr__(self, "outcomes", MappingProxyType(outcomes))

    # --- reading ---------------------------------------------------------------------------

    @property
    def latest(self) -> PriceRecord | None:
        """The newest price record, or None."""
        return self.prices[-1] if self.prices else None

    def round_time(self, round_id: str) -> datetime | None:
        """When round ``round_id`` ran, if a price record (or, for the last round, ``updated``)
        says so."""
        for p in reversed(self.prices):
            if p.round_id == round_id:
                return p.time
        return self.updated if round_id == self.round_id else None

    def quote(self, model_or_profile: str) -> float | None:
        """The latest clearing price per GPU-equivalent of a GPU model, or of a MIG profile
        (``1g.10gb``: the models whose name ends with ``-MIG-1g.10gb``, the lowest of them):
        from the newest price record that has one (a model nobody won in the last round keeps
        its earlier price); None when no record has one."""
        match = _model_matcher(model_or_profile)
        for record in reversed(self.prices):
            found = [price for model, price in record.clearing.items() if match(model)]
            if found:
                return min(found)
        return None

    def utilisation_of(self, model_or_profile: str) -> float | None:
        """The latest utilisation (0..1) of a model or MIG profile (the highest of the matching
        models), as :meth:`quote` finds prices."""
        match = _model_matcher(model_or_profile)
        for record in reversed(self.prices):
            found = [u for model, u in record.utilisation.items() if match(model)]
            if found:
                return max(found)
        return None

    # --- writing ---------------------------------------------------------------------------

    def with_round(
        self,
        round_id: str,
        time: datetime,
        *,
        clearing: Mapping[str, float] | None = None,
        utilisation: Mapping[str, float] | None = None,
        outcomes: Mapping[str, PodOutcome] | None = None,
        wallet: WalletView | None = None,
    ) -> MarketView:
        """The view after round ``round_id`` ran at ``time``: its price record appended (only
        the newest :data:`MAX_PRICE_RECORDS` kept), ``round`` and ``updated`` set, and the
        outcomes (and wallet, when given) replaced by the round's."""
        record = PriceRecord(round_id, time, clearing or {}, utilisation or {})
        return replace(
            self,
            round_id=round_id,
            updated=record.time,
            prices=(*self.prices, record)[-MAX_PRICE_RECORDS:],
            outcomes=dict(outcomes) if outcomes is not None else {},
            wallet=wallet if wallet is not None else self.wallet,
        )

    def to_configmap_data(self) -> dict[str, str]:
        """The ConfigMap's ``data`` (every value a string; JSON with sorted keys)."""
        return {
            "agent": self.agent,
            "round": self.round_id,
            "updated": format_time(self.updated),
            "wallet": _dumps(self.wallet.to_json() if self.wallet else None),
            "prices": _dumps([p.to_json() for p in self.prices]),
            "outcomes": _dumps({k: v.to_json() for k, v in sorted(self.outcomes.items())}),
        }

    @classmethod
    def from_configmap_data(cls, data: Any) -> MarketView:
        """Read and validate a ConfigMap's ``data``; ProblemError naming the key
        (``data.wallet.available``) on anything wrong."""
        if not isinstance(data, Mapping):
            raise ProblemError("data", f"not an object: {type(data).__name__}")
        for key in ("agent", "round", "updated"):
            if key not in data:
                raise ProblemError(f"data.{key}", "missing")
            _under(f"data.{key}", partial(_text, data[key], ""))
        wallet_raw = _loads(data, "wallet")
        wallet = (
            None
            if wallet_raw is None
            else _under("data.wallet", lambda: WalletView.from_json(wallet_raw))
        )
        prices_raw = _loads(data, "prices")
        if not isinstance(prices_raw, list):
            raise ProblemError("data.prices", f"not a list: {type(prices_raw).__name__}")
        prices = [
            _under(f"data.prices[{i}]", partial(PriceRecord.from_json, p))
            for i, p in enumerate(prices_raw)
        ]
        outcomes_raw = _loads(data, "outcomes")
        if not isinstance(outcomes_raw, dict):
            raise ProblemError("data.outcomes", f"not an object: {type(outcomes_raw).__name__}")
        outcomes = {
            pod: _under(f"data.outcomes.{pod}", partial(PodOutcome.from_json, o))
            for pod, o in outcomes_raw.items()
        }
        return _under(
            "data",
            lambda: cls(
                agent=data["agent"],
                round_id=data["round"],
                updated=data["updated"],
                wallet=wallet,
                prices=tuple(prices),
                outcomes=outcomes,
            ),
        )


def _model_matcher(model_or_profile: str) -> Callable[[str], bool]:
    """Exact model name, or (a name that is no model's) any model ending in ``-MIG-<it>``."""
    suffix = "-MIG-" + model_or_profile

    def match(model: str) -> bool:
        return model == model_or_profile or model.endswith(suffix)

    return match


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _loads(data: Mapping[str, Any], key: str) -> Any:
    path = f"data.{key}"
    if key not in data:
        raise ProblemError(path, "missing")
    text = data[key]
    if not isinstance(text, str):
        raise ProblemError(path, f"not a string (ConfigMap data holds strings): {text!r}")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        raise ProblemError(path, f"not JSON: {e}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _object(obj: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ProblemError(path, f"not an object: {obj!r}")
    return obj


def _required(o: Mapping[str, Any], key: str) -> Any:
    if key not in o:
        raise ProblemError(key, "missing")
    return o[key]


_T = TypeVar("_T")


def _under(prefix: str, make: Callable[[], _T]) -> _T:
    """``make()``, with any ProblemError's path put under ``prefix``."""
    try:
        return make()
    except ProblemError as e:
        raise e.under(prefix) from None
