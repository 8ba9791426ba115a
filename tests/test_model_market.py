"""Tests of allocator.model.market: the market ConfigMap's data round-trips, keeps the newest price
records, answers quotes, and names the key of anything malformed."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.model import ProblemError
from allocator.model.market import (
    MARKET_CONFIGMAP,
    MARKET_NAMESPACE,
    MAX_PRICE_RECORDS,
    OUTCOMES,
    MarketView,
    PodOutcome,
    PriceRecord,
    WalletView,
    format_time,
)

T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def _view() -> MarketView:
    wallet = WalletView("alice", 100.0, 10.0, "24h", 5, 12.5, 97.5)
    prices = (
        PriceRecord("r-1", T0, {"H100-80GB": 2.0}, {"H100-80GB": 0.5}),
        PriceRecord(
            "r-2",
            T0 + timedelta(minutes=1),
            {"H100-80GB": 3.0, "A100-SXM4-80GB-MIG-1g.10gb": 1.5},
            {"H100-80GB": 1.0, "A100-SXM4-80GB-MIG-1g.10gb": 0.25},
        ),
    )
    outcomes = {
        "team/train-0": PodOutcome("r-2", "won", 6.0, 3.0, "gpu-1", (0, 1), {}, "won"),
        "team/sweep": PodOutcome(
            "r-2",
            "outbid",
            1.0,
            None,
            None,
            (),
            {"density": 0.5, "lowest_winning_density": 1.5, "model": "H100-80GB"},
            "round r-2: outbid",
        ),
    }
    return MarketView("alice", "r-2", T0 + timedelta(minutes=1), wallet, prices, outcomes)


def _data() -> dict[str, str]:
    return _view().to_configmap_data()


def _error(data: dict[str, Any]) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        MarketView.from_configmap_data(data)
    return info.value


def _with(key: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = _data()
    data[key] = value if isinstance(value, str) else json.dumps(value)
    return data


def test_constants() -> None:
    """The ConfigMap's name, namespace, the history kept and the outcomes are the protocol's."""
    assert (MARKET_CONFIGMAP, MARKET_NAMESPACE, MAX_PRICE_RECORDS) == (
        "gpualloc-market",
        "default",
        20,
    )
    assert OUTCOMES == (
        "won",
        "outbid",
        "does_not_fit",
        "over_budget",
        "below_reserve",
        "skipped",
    )


def test_configmap_data_format() -> None:
    """Every value is a string: agent, round, updated plain; the rest JSON with protocol keys."""
    data = _data()
    assert set(data) == {"agent", "round", "updated", "wallet", "prices", "outcomes"}
    assert all(isinstance(v, str) for v in data.values())
    assert (data["agent"], data["round"], data["updated"]) == (
        "alice",
        "r-2",
        "2026-12-07T10:01:00Z",
    )
    assert json.loads(data["wallet"]) == {
        "name": "alice",
        "balance": 100.0,
        "incomePerPeriod": 10.0,
        "period": "24h",
        "priority": 5,
        "spent": 12.5,
        "available": 97.5,
    }
    prices = json.loads(data["prices"])
    assert prices[0] == {
        "round": "r-1",
        "time": "2026-12-07T10:00:00Z",
        "clearing": {"H100-80GB": 2.0},
        "utilisation": {"H100-80GB": 0.5},
    }
    assert json.loads(data["outcomes"])["team/train-0"] == {
        "round": "r-2",
        "outcome": "won",
        "bid": 6.0,
        "payment": 3.0,
        "node": "gpu-1",
        "gpus": [0, 1],
        "detail": {},
        "message": "won",
    }


def test_round_trip() -> None:
    """from_configmap_data(to_configmap_data(v)) == v."""
    view = _view()
    assert MarketView.from_configmap_data(view.to_configmap_data()) == view


def test_no_wallet_and_unknown_keys() -> None:
    """A null wallet reads as None and unknown keys at any level are ignored."""
    data = _with("wallet", None)
    data["future"] = "x"
    prices = json.loads(data["prices"])
    prices[0]["extra"] = 1
    data["prices"] = json.dumps(prices)
    view = MarketView.from_configmap_data(data)
    assert view.wallet is None
    assert view.prices[0].clearing == {"H100-80GB": 2.0}


def test_with_round_keeps_the_newest_twenty() -> None:
    """with_round appends a record, sets round/updated/outcomes, keeps the newest 20."""
    view = MarketView("alice", "r-0", T0)
    for i in range(1, 26):
        view = view.with_round(
            f"r-{i}", T0 + timedelta(seconds=i), clearing={"H100-80GB": float(i)}
        )
    assert len(view.prices) == MAX_PRICE_RECORDS
    assert [p.round_id for p in view.prices] == [f"r-{i}" for i in range(6, 26)]
    assert (view.round_id, view.updated) == ("r-25", T0 + timedelta(seconds=25))
    outcome = PodOutcome("r-26", "skipped", message="bad")
    later = view.with_round("r-26", T0 + timedelta(seconds=26), outcomes={"a/b": outcome})
    assert later.outcomes == {"a/b": outcome}
    assert later.prices[0].round_id == "r-7"
    assert MarketView.from_configmap_data(later.to_configmap_data()) == later


def test_quote() -> None:
    """quote gives a model's or MIG profile's newest price, looking back past rounds with none."""
    view = _view().with_round("r-3", T0 + timedelta(minutes=2), clearing={"A100-SXM4-80GB": 1.0})
    assert view.quote("A100-SXM4-80GB") == 1.0
    assert view.quote("H100-80GB") == 3.0  # r-3 had no H100 winner: r-2's price
    assert view.quote("1g.10gb") == 1.5
    assert view.quote("A100-SXM4-80GB-MIG-1g.10gb") == 1.5
    assert view.quote("3g.40gb") is None
    assert view.utilisation_of("1g.10gb") == 0.25
    assert view.round_time("r-2") == T0 + timedelta(minutes=1)
    assert view.round_time("r-99") is None


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("wallet", {"name": "a", "balance": 1, "available": "lots"}, "data.wallet.available"),
        ("wallet", {"name": "a", "balance": -1, "available": 1}, "data.wallet.balance"),
        ("wallet", {"name": "a", "available": 1}, "data.wallet.balance"),
        (
            "wallet",
            {"name": "a", "balance": 1, "available": 1, "period": "1d"},
            "data.wallet.period",
        ),
        (
            "wallet",
            {"name": "a", "balance": 1, "available": 1, "priority": 1.5},
            "data.wallet.priority",
        ),
        ("wallet", [1], "data.wallet"),
        ("wallet", "{not json", "data.wallet"),
        ("prices", {"round": "r"}, "data.prices"),
        ("prices", [{"round": "r", "time": "yesterday"}], "data.prices[0].time"),
        ("prices", [{"round": "r", "time": "2026-12-07T10:00:00"}], "data.prices[0].time"),
        (
            "prices",
            [{"round": "r", "time": "2026-12-07T10:00:00Z", "clearing": {"H100-80GB": "1"}}],
            "data.prices[0].clearing.H100-80GB",
        ),
        (
            "prices",
            [{"round": "r", "time": "2026-12-07T10:00:00Z", "utilisation": {"H100-80GB": 1.5}}],
            "data.prices[0].utilisation.H100-80GB",
        ),
        (
            "prices",
            [
                {"round": "a", "time": "2026-12-07T10:00:00Z"},
                {"round": "b", "time": "2026-12-07T09:00:00Z"},
            ],
            "data.prices[1].time",
        ),
        (
            "prices",
            [{"round": f"r{i}", "time": "2026-12-07T10:00:00Z"} for i in range(21)],
            "data.prices",
        ),
        ("outcomes", {"team/a": {"round": "r", "outcome": "lost"}}, "data.outcomes.team/a.outcome"),
        (
            "outcomes",
            {"team/a": {"round": "r", "outcome": "won", "gpus": [0, -1]}},
            "data.outcomes.team/a.gpus[1]",
        ),
        (
            "outcomes",
            {"team/a": {"round": "r", "outcome": "won", "bid": True}},
            "data.outcomes.team/a.bid",
        ),
        (
            "outcomes",
            {"team/a": {"round": "r", "outcome": "outbid", "detail": {"x": [1]}}},
            "data.outcomes.team/a.detail.x",
        ),
        ("outcomes", {"team/a": {"outcome": "won"}}, "data.outcomes.team/a.round"),
        ("outcomes", {"nonamespace": {"round": "r", "outcome": "won"}}, "data.outcomes"),
        ("outcomes", [], "data.outcomes"),
        ("updated", "soon", "data.updated"),
        ("round", "", "data.round"),
    ],
)
def test_bad_input_names_the_key(key: str, value: Any, path: str) -> None:
    """Each malformed value raises ProblemError whose path names its key."""
    assert _error(_with(key, value)).path == path


def test_missing_keys_and_non_strings() -> None:
    """A missing key, a non-string value, NaN in JSON and a non-mapping are named."""
    for key in ("agent", "round", "updated", "wallet", "prices", "outcomes"):
        data: dict[str, Any] = _data()
        del data[key]
        assert _error(data).path == f"data.{key}"
    assert _error({**_data(), "prices": 3}).path == "data.prices"
    nan = '[{"round": "r", "time": "2026-12-07T10:00:00Z", "clearing": {"x": NaN}}]'
    assert _error(_with("prices", nan)).path == "data.prices"
    assert _error([]).path == "data"  # type: ignore[arg-type]


def test_constructors_validate() -> None:
    """Building the dataclasses in code validates too (no invalid view can be written)."""
    with pytest.raises(ProblemError, match="available"):
        WalletView("a", 1.0, 0.0, None, 0, 0.0, math.inf)
    with pytest.raises(ProblemError, match="outcome"):
        PodOutcome("r", "lost")  # type: ignore[arg-type]
    with pytest.raises(ProblemError, match="time"):
        PriceRecord("r", datetime(2026, 1, 1))
    assert format_time(datetime(2026, 1, 1, 1, 0, 0, 500000, tzinfo=UTC)) == (
        "2026-01-01T01:00:00.500000Z"
    )


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_amounts = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
_fractions = st.floats(min_value=0, max_value=1, allow_nan=False)
_times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
_wallets = st.builds(
    WalletView,
    name=_names,
    balance=_amounts,
    income_per_period=_amounts,
    period=st.sampled_from([None, "24h", "1h30m", "90s", "1.5h"]),
    priority=st.integers(0, 1000),
    spent=_amounts,
    available=_amounts,
)
_outcomes = st.builds(
    PodOutcome,
    round_id=_names,
    outcome=st.sampled_from(OUTCOMES),
    bid=st.none() | _amounts,
    payment=st.none() | _amounts,
    node=st.none() | _names,
    gpus=st.lists(st.integers(0, 16), max_size=8).map(tuple),
    detail=st.dictionaries(_names, _amounts | _names, max_size=3),
    message=st.text(max_size=40),
)


@st.composite
def _views(draw: st.DrawFn) -> MarketView:
    times = sorted(draw(st.lists(_times, max_size=MAX_PRICE_RECORDS)))
    prices = tuple(
        PriceRecord(
            draw(_names),
            t,
            draw(st.dictionaries(_names, _amounts, max_size=4)),
            draw(st.dictionaries(_names, _fractions, max_size=4)),
        )
        for t in times
    )
    pods = st.tuples(_names, _names).map(lambda p: f"{p[0]}/{p[1]}")
    return MarketView(
        agent=draw(_names),
        round_id=draw(_names),
        updated=draw(_times),
        wallet=draw(st.none() | _wallets),
        prices=prices,
        outcomes=draw(st.dictionaries(pods, _outcomes, max_size=5)),
    )


@settings(max_examples=150, deadline=None)
@given(_views())
def test_round_trip_property(view: MarketView) -> None:
    """Any valid view survives to_configmap_data -> from_configmap_data unchanged."""
    data = view.to_configmap_data()
    assert all(isinstance(v, str) for v in data.values())
    assert MarketView.from_configmap_data(data) == view
