"""Keys, strategies, subscriptions, positions, orders, P&L and backtests through HTTP against real
Postgres (and the exchange simulator where the exchange is involved). Trades, orders and backtest
rows are written into the store the way the live engine and the backtester write them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.fixtures.api import signup
from tests.fixtures.exchange import funded_account
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import BacktestResult, BrokerCredential, Order, Trade

LOOKAHEAD_SOURCE = """
import polars as pl

def signals(candles, params):
    future = candles["close"].shift(-1)
    action = pl.Series(["LONG" if (f is not None and f > c) else "HOLD" for c, f in zip(candles["close"], future)])
    return pl.DataFrame({"action": action, "stop_loss": [None] * len(candles), "take_profit": [None] * len(candles)},
                        schema={"action": pl.String, "stop_loss": pl.Float64, "take_profit": pl.Float64})
"""


def new_strategy(client, user, **overrides) -> dict:
    body = {"name": "BTC SMA", "code": f"s-{uuid.uuid4().hex[:8]}", "symbol": "BTCUSDT", "resolution": "5m",
            "builtin": "sma_crossover", "params": {"fast": 5, "slow": 20}, "tags": ["trend", "btc"]}  # fmt: skip
    body.update(overrides)
    response = client.post("/api/strategy-upload/strategies", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def add_keys(client, user, api_key: str = "AKIA-test-key-0001", secret: str = "s3cret-value-0001") -> dict:
    response = client.post(
        "/api/broker/keys", json={"apiKey": api_key, "apiSecret": secret}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def subscribe(client, user, strategy_id: int, **terms) -> dict:
    body = {"capital": "1000", "riskPerTrade": "0.02", "leverage": 2, **terms}
    response = client.post(f"/api/strategies/{strategy_id}/subscribe", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


# ---- broker keys ----------------------------------------------------------------------------


def test_keys_are_stored_encrypted_and_only_ever_shown_masked(api):
    user = signup(api)
    shown = add_keys(api, user, "PUBLICKEY-abcdef-7788", "TOPSECRET-value-9911")
    assert shown["apiKey"] == "****7788"
    status = api.get("/api/broker/status", headers=user.headers)
    assert status.json()["connected"] is True and status.json()["apiKey"] == "****7788"
    for response in (status, api.get("/auth/me", headers=user.headers)):
        assert "TOPSECRET" not in response.text and "PUBLICKEY-abcdef" not in response.text
    with session_scope(get_settings()) as session:
        row = session.query(BrokerCredential).filter_by(user_id=user.id).one()
        assert "TOPSECRET" not in row.api_secret_encrypted and "PUBLICKEY" not in row.api_key_encrypted


def test_blank_or_unknown_key_fields_are_refused_with_the_field_name(api):
    user = signup(api)
    blank = api.post("/api/broker/keys", json={"apiKey": "   ", "apiSecret": "x" * 10}, headers=user.headers)
    assert blank.status_code == 422 and blank.json()["error"].startswith("apiKey")
    other = api.post(
        "/api/broker/keys",
        json={"apiKey": "k" * 10, "apiSecret": "x" * 10, "broker": "binance"},
        headers=user.headers,
    )
    assert other.status_code == 422 and other.json()["error"].startswith("broker")
    assert api.get("/api/broker/status", headers=user.headers).json()["connected"] is False


@pytest.fixture()
def exchange_api(api_factory, on_simulator):
    return api_factory()


def test_broker_test_returns_the_balances_the_exchange_holds(exchange_api, simulator):
    user = signup(exchange_api)
    account = funded_account(simulator, {"USDT": "2500.75", "BTC": "0.125"})
    try:
        add_keys(exchange_api, user, account.api_key, account.credentials.api_secret)
        response = exchange_api.post("/api/broker/test", headers=user.headers)
        assert response.status_code == 200, response.text
        balances = {b["currency"]: b for b in response.json()["balances"]}
        assert balances["USDT"]["balance"] == "2500.75" and balances["BTC"]["balance"] == "0.125"
        assert account.credentials.api_secret not in response.text
        assert exchange_api.get("/api/broker/status", headers=user.headers).json()["lastTestedAt"] is not None
    finally:
        account.close()


def test_broker_test_with_keys_the_exchange_refuses_is_a_clear_400(exchange_api, simulator):
    user = signup(exchange_api)
    account = funded_account(simulator)
    try:
        add_keys(exchange_api, user, account.api_key, "not-the-right-secret")
        response = exchange_api.post("/api/broker/test", headers=user.headers)
        assert response.status_code == 400
        assert response.json() == {"error": "the exchange rejected these API keys"}
    finally:
        account.close()


def test_broker_test_without_keys_or_exchange(api_factory, monkeypatch):
    monkeypatch.setenv("COINDCX_API_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    reset_settings()
    client = api_factory()
    user = signup(client)
    assert client.post("/api/broker/test", headers=user.headers).status_code == 404
    add_keys(client, user)
    down = client.post("/api/broker/test", headers=user.headers)
    assert down.status_code == 502 and "127.0.0.1" not in down.text


def test_keys_in_use_cannot_be_deleted_until_their_subscriptions_end(api):
    user = signup(api)
    add_keys(api, user)
    sub = subscribe(api, user, new_strategy(api, user)["id"])
    refused = api.delete("/api/broker/keys", headers=user.headers)
    assert refused.status_code == 409 and "1 active subscription" in refused.json()["error"]
    assert api.delete(f"/api/strategies/subscriptions/{sub['id']}", headers=user.headers).status_code == 200
    assert api.delete("/api/broker/keys", headers=user.headers).status_code == 200
    assert api.get("/api/broker/status", headers=user.headers).json()["connected"] is False
    assert api.delete("/api/broker/keys", headers=user.headers).status_code == 404


# ---- strategies -----------------------------------------------------------------------------


def test_builtin_strategy_is_validated_on_upload(api):
    user = signup(api)
    created = new_strategy(api, user)
    assert created["validationStatus"] == "VALID" and created["isOwner"] is True
    bad = api.post(
        "/api/strategy-upload/strategies",
        json={"name": "x", "code": "bad-params", "symbol": "BTCUSDT", "resolution": "5m", "builtin": "sma_crossover",
              "params": {"fastest": 3}},
        headers=user.headers,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"].startswith("params unknown parameter")
    assert (
        api.get("/api/strategy-upload/strategies?search=bad-params", headers=user.headers).json()["total"]
        == 0
    )


def test_uploaded_code_that_looks_ahead_is_stored_invalid_with_the_reason(api):
    user = signup(api)
    created = new_strategy(api, user, builtin=None, source=LOOKAHEAD_SOURCE, params={})
    assert created["validationStatus"] == "INVALID"
    assert any("looks ahead" in e for e in created["validationErrors"])
    assert created["source"] == LOOKAHEAD_SOURCE


def test_strategy_needs_exactly_one_of_source_and_builtin(api):
    user = signup(api)
    both = {"name": "x", "code": "both-given", "symbol": "BTCUSDT", "resolution": "5m",
            "builtin": "sma_crossover", "source": "def signals(c, p): pass"}  # fmt: skip
    response = api.post("/api/strategy-upload/strategies", json=both, headers=user.headers)
    assert response.status_code == 422 and response.json()["error"].startswith("source")


def test_private_strategies_do_not_exist_for_other_users(api):
    owner, other = signup(api), signup(api)
    add_keys(api, other)
    sid = new_strategy(api, owner)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    assert api.get(base, headers=other.headers).status_code == 404
    assert api.put(base, json={"name": "mine now"}, headers=other.headers).status_code == 404
    assert api.delete(base, headers=other.headers).status_code == 404
    sub = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 10, "riskPerTrade": 0.1}, headers=other.headers
    )
    assert sub.status_code == 404
    assert api.get(f"/api/backtest/history/{sid}", headers=other.headers).status_code == 404
    # the 404 is the same as for an id that does not exist at all
    missing = api.get("/api/strategy-upload/strategies/999999", headers=other.headers)
    assert api.get(base, headers=other.headers).json()["error"].replace(str(sid), "N") == missing.json()[
        "error"
    ].replace("999999", "N")
    assert sid not in [
        s["id"]
        for s in api.get("/api/strategy-upload/strategies", headers=other.headers).json()["strategies"]
    ]


def test_public_strategies_are_visible_but_only_the_owner_changes_them(api):
    owner, other = signup(api), signup(api)
    created = new_strategy(api, owner, is_public=True, builtin=None, source=LOOKAHEAD_SOURCE, params={})
    base = f"/api/strategy-upload/strategies/{created['id']}"
    seen = api.get(base, headers=other.headers)
    assert seen.status_code == 200 and seen.json()["isOwner"] is False
    assert seen.json()["source"] is None  # the author's code stays theirs
    assert api.put(base, json={"name": "hijack"}, headers=other.headers).status_code == 403
    assert api.delete(base, headers=other.headers).status_code == 403
    assert api.get(base, headers=owner.headers).json()["name"] == "BTC SMA"


def test_list_filters_by_search_status_and_tags(api):
    user = signup(api)
    a = new_strategy(api, user, name="Alpha trend", tags=["trend", "btc"])
    b = new_strategy(api, user, name="Beta revert", tags=["revert"], builtin="rsi_reversion", params={})

    def ids(q):
        return [
            s["id"]
            for s in api.get(f"/api/strategy-upload/strategies{q}", headers=user.headers).json()["strategies"]
        ]

    assert ids("?search=alpha") == [a["id"]]
    assert ids("?tags=trend,btc") == [a["id"]] and ids("?tags=revert") == [b["id"]]
    assert ids("?status=valid") == [a["id"], b["id"]] and ids("?status=invalid") == []
    assert api.get("/api/strategy-upload/strategies?status=bogus", headers=user.headers).status_code == 422


def test_update_revalidates_and_bad_updates_change_nothing(api):
    user = signup(api)
    sid = new_strategy(api, user)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    bad = api.put(base, json={"params": {"nope": 1}}, headers=user.headers)
    assert bad.status_code == 422
    assert api.put(base, json={"lookback": 0}, headers=user.headers).status_code == 422
    assert api.get(base, headers=user.headers).json()["params"] == {"fast": 5, "slow": 20}
    ok = api.put(base, json={"params": {"fast": 7, "slow": 30}, "name": "Renamed"}, headers=user.headers)
    assert (
        ok.status_code == 200 and ok.json()["validationStatus"] == "VALID" and ok.json()["name"] == "Renamed"
    )


def test_delete_is_refused_while_subscribed_then_soft(api):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    sub = subscribe(api, user, sid)
    base = f"/api/strategy-upload/strategies/{sid}"
    refused = api.delete(base, headers=user.headers)
    assert refused.status_code == 409 and "active subscriptions" in refused.json()["error"]
    api.delete(f"/api/strategies/subscriptions/{sub['id']}", headers=user.headers)
    assert api.delete(base, headers=user.headers).status_code == 200
    assert api.get(base, headers=user.headers).status_code == 404
    # history survives: the cancelled subscription still names it
    subs = api.get("/api/strategies/subscriptions?includeCancelled=true", headers=user.headers).json()[
        "subscriptions"
    ]
    assert [s["strategyId"] for s in subs] == [sid]


def test_updates_and_deletes_reach_live_execution_s_registry_at_once(api_factory, redis_url, monkeypatch):
    from xcoin_trading.live.registry import registry_for

    monkeypatch.setenv("XCOIN_REDIS_URL", redis_url)
    reset_settings()
    client = api_factory()
    user = signup(client)
    sid = new_strategy(client, user)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    with session_scope(get_settings()) as session:
        assert registry_for(get_settings()).active_candle_keys(session) == {"BTCUSDT:5m"}  # built in Redis
    assert (
        client.put(base, json={"symbol": "ETHUSDT", "resolution": "1h"}, headers=user.headers).status_code
        == 200
    )
    with session_scope(get_settings()) as session:  # another worker: a fresh registry on the same Redis
        assert registry_for(get_settings()).active_candle_keys(session) == {"ETHUSDT:1h"}
    assert client.delete(base, headers=user.headers).status_code == 200
    with session_scope(get_settings()) as session:
        assert registry_for(get_settings()).active_candle_keys(session) == set()


# ---- subscriptions --------------------------------------------------------------------------


def test_subscription_lifecycle(api):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    raw = b'{"capital": 1234.567890123456789, "riskPerTrade": 0.02, "leverage": 2, "maxPositions": 3}'
    created = api.post(
        f"/api/strategies/{sid}/subscribe",
        content=raw,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    sub = created.json()
    assert sub["capital"] == "1234.567890123456789"  # exact: JSON numbers are parsed as decimals, not floats
    assert sub["leverage"] == "2" and sub["isActive"] and not sub["isPaused"]
    again = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 5, "riskPerTrade": 0.1}, headers=user.headers
    )
    assert again.status_code == 409
    base = f"/api/strategies/subscriptions/{sub['id']}"
    assert api.post(f"{base}/resume", headers=user.headers).status_code == 409
    assert api.post(f"{base}/pause", headers=user.headers).json()["isPaused"] is True
    assert api.post(f"{base}/pause", headers=user.headers).status_code == 409
    assert api.post(f"{base}/resume", headers=user.headers).json()["isPaused"] is False
    updated = api.put(base, json={"riskPerTrade": "0.015", "maxDailyLoss": 50}, headers=user.headers)
    assert updated.json()["riskPerTrade"] == "0.015" and updated.json()["maxDailyLoss"] == "50"
    stats = api.get(f"{base}/stats", headers=user.headers).json()
    assert stats == {"subscriptionId": sub["id"], "strategyId": sid, "totalTrades": 0, "winningTrades": 0,
                     "losingTrades": 0, "winRate": 0.0, "totalPnl": "0", "capital": "1234.567890123456789",
                     "isActive": True, "isPaused": False}  # fmt: skip
    assert (
        api.get(f"/api/strategy-upload/strategies/{sid}", headers=user.headers).json()["subscriberCount"] == 1
    )
    cancelled = api.delete(base, headers=user.headers).json()
    assert cancelled["isActive"] is False and cancelled["unsubscribedAt"] is not None
    assert api.get("/api/strategies/subscriptions", headers=user.headers).json() == {"subscriptions": []}
    assert (
        api.get(f"/api/strategy-upload/strategies/{sid}", headers=user.headers).json()["subscriberCount"] == 0
    )


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"capital": -5, "riskPerTrade": 0.1}, "capital"),
        ({"capital": 100, "riskPerTrade": 1.5}, "riskPerTrade"),
        ({"capital": 100, "riskPerTrade": 0.1, "leverage": 50}, "leverage"),  # over XCOIN_MAX_LEVERAGE (20)
        ({"capital": "1e3", "riskPerTrade": 0.1}, "capital"),
        ({"capital": 100, "riskPerTrade": 0.1, "maxPositions": 0}, "maxPositions"),
        ({"capital": 100, "riskPerTrade": 0.1, "brokerKeys": 1}, "brokerKeys"),
        ({"capital": 100}, "riskPerTrade"),
    ],
)
def test_bad_terms_name_the_field_and_subscribe_nothing(api, terms, field):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    response = api.post(f"/api/strategies/{sid}/subscribe", json=terms, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field), response.json()
    assert api.get("/api/strategies/subscriptions", headers=user.headers).json() == {"subscriptions": []}


def test_subscribing_without_keys_says_so(api):
    user = signup(api)
    sid = new_strategy(api, user)["id"]
    response = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 10, "riskPerTrade": 0.1}, headers=user.headers
    )
    assert response.status_code == 404 and "API keys" in response.json()["error"]


def test_other_users_subscriptions_do_not_exist_for_you(api):
    owner, other = signup(api), signup(api)
    add_keys(api, owner)
    sid = new_strategy(api, owner, is_public=True)["id"]
    sub = subscribe(api, owner, sid)
    base = f"/api/strategies/subscriptions/{sub['id']}"
    for method, path, body in [
        ("GET", base, None), ("GET", f"{base}/stats", None), ("POST", f"{base}/pause", None),
        ("POST", f"{base}/resume", None), ("PUT", base, {"capital": 1}), ("DELETE", base, None),
    ]:  # fmt: skip
        assert api.request(method, path, json=body, headers=other.headers).status_code == 404, (method, path)
    assert api.get("/api/strategies/subscriptions", headers=other.headers).json() == {"subscriptions": []}
    assert api.get(base, headers=owner.headers).json()["isPaused"] is False  # untouched


# ---- positions, orders, P&L -----------------------------------------------------------------

T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def _trade(session, user_id, sub, **fields) -> Trade:
    trade = Trade(user_id=user_id, subscription_id=sub["id"], strategy_id=sub["strategyId"], **fields)
    session.add(trade)
    session.flush()
    return trade


def _book(api):
    """Two users with open and closed trades; returns (ana, ben, ana's subscription)."""
    ana, ben = signup(api), signup(api)
    for u in (ana, ben):
        add_keys(api, u)
    sid = new_strategy(api, ana, is_public=True)["id"]
    sub_a, sub_b = subscribe(api, ana, sid), subscribe(api, ben, sid)
    with session_scope(get_settings()) as s:
        D = Decimal
        _trade(s, ana.id, sub_a, symbol="BTCUSDT", side="LONG", quantity=D("0.015"), leverage=D(2),
               entry_price=D("40000.5"), entry_fee=D("0.6"), status="OPEN", entry_time=T0)  # fmt: skip
        _trade(s, ana.id, sub_a, symbol="B-ETH_USDT", market_type="futures", side="SHORT", quantity=D("0.2"),
               leverage=D(5), entry_price=D("2500"), entry_fee=D("0.25"), status="OPEN", entry_time=T0)  # fmt: skip
        _trade(s, ana.id, sub_a, symbol="BTCUSDT", side="LONG", quantity=D("0.01"), entry_price=D("40000"),
               exit_price=D("41000"), entry_fee=D("0.4"), exit_fee=D("0.41"), fees=D("0.81"), pnl=D("9.19"),
               status="CLOSED", entry_time=T0 - timedelta(days=2), exit_time=T0 - timedelta(days=1))  # fmt: skip
        _trade(s, ben.id, sub_b, symbol="SOLUSDT", side="LONG", quantity=D("3"), entry_price=D("150"),
               entry_fee=D("0.45"), status="OPEN", entry_time=T0)  # fmt: skip
    return ana, ben, sub_a, sub_b


def test_current_positions_are_marked_to_the_exchange_ticker(exchange_api, simulator):
    api = exchange_api
    ana, ben, _, _ = _book(api)
    response = api.get("/api/positions/current", headers=ana.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    # Independently: the simulator's own ticker, and the P&L by hand (futures marked at spot).
    ticker = {
        r["market"]: Decimal(r["last_price"]) for r in httpx.get(f"{simulator.url}/exchange/ticker").json()
    }
    btc, eth = ticker["BTCUSDT"], ticker["ETHUSDT"]
    expected = {
        "BTCUSDT": (btc - Decimal("40000.5")) * Decimal("0.015") - Decimal("0.6"),
        "B-ETH_USDT": (Decimal("2500") - eth) * Decimal("0.2") - Decimal("0.25"),
    }
    got = {p["symbol"]: Decimal(p["unrealizedPnl"]) for p in body["positions"]}
    assert got == expected  # exact decimals; ben's SOL and ana's closed trade are not here
    summary = body["summary"]
    assert summary["openPositions"] == 2 and summary["pricesAvailable"] is True
    assert Decimal(summary["totalUnrealizedPnl"]) == sum(expected.values())
    assert Decimal(summary["totalNotional"]) == Decimal("40000.5") * Decimal("0.015") + Decimal(
        "2500"
    ) * Decimal("0.2")
    assert Decimal(summary["totalMargin"]) == Decimal("40000.5") * Decimal("0.015") / 2 + Decimal("500") / 5
    assert [
        p["symbol"] for p in api.get("/api/positions/current", headers=ben.headers).json()["positions"]
    ] == ["SOLUSDT"]


def test_positions_without_a_ticker_say_so_instead_of_guessing(api_factory, monkeypatch):
    monkeypatch.setenv("COINDCX_API_URL", "http://127.0.0.1:9")
    reset_settings()
    client = api_factory()
    ana, _, _, _ = _book(client)
    body = client.get("/api/positions/current", headers=ana.headers).json()
    assert body["summary"]["pricesAvailable"] is False and body["summary"]["totalUnrealizedPnl"] is None
    assert body["summary"]["priceError"] and all(p["unrealizedPnl"] is None for p in body["positions"])


def test_orders_are_paginated_newest_first_with_a_summary(api):
    ana, ben, sub_a, sub_b = _book(api)
    statuses = ["FILLED", "FILLED", "OPEN", "CANCELLED", "REJECTED", "INTENT", "PARTIALLY_FILLED", "SENDING"]
    written = []
    with session_scope(get_settings()) as s:
        for n in range(23):
            status = statuses[n % len(statuses)]
            filled = Decimal("0.01") * (n + 1) if status in ("FILLED", "PARTIALLY_FILLED") else Decimal(0)
            avg = Decimal("40000") + n if filled else None
            fee = (filled * avg * Decimal("0.001")) if filled else Decimal(0)
            order = Order(subscription_id=sub_a["id"], leg="ENTRY", client_order_id=f"c-{uuid.uuid4().hex[:20]}",
                          market="BTCUSDT", side="buy", order_type="market_order", quantity=Decimal("0.01") * (n + 1),
                          filled_quantity=filled, avg_price=avg, fee=fee, status=status,
                          created_at=T0 + timedelta(minutes=n))  # fmt: skip
            s.add(order)
            written.append(order)
        s.add(Order(subscription_id=sub_b["id"], leg="ENTRY", client_order_id="ben-1", market="SOLUSDT", side="buy",
                    order_type="market_order", quantity=Decimal(1), status="FILLED", filled_quantity=Decimal(1),
                    avg_price=Decimal(150), fee=Decimal("0.15"), created_at=T0))  # fmt: skip
        s.flush()
        newest_first = [o.id for o in sorted(written, key=lambda o: o.created_at, reverse=True)]
    page2 = api.get("/api/positions/orders?page=2&limit=10", headers=ana.headers).json()
    assert [o["id"] for o in page2["orders"]] == newest_first[10:20]
    assert page2["pagination"] == {"page": 2, "limit": 10, "total": 23, "totalPages": 3}
    volume = fees = Decimal(0)
    for o in written:
        if o.avg_price is not None:
            volume += o.filled_quantity * o.avg_price
        fees += o.fee
    count = lambda *names: sum(1 for o in written if o.status in names)  # noqa: E731
    assert page2["summary"] == {
        "totalOrders": 23, "filledOrders": count("FILLED"), "pendingOrders": count("INTENT", "SENDING", "OPEN", "PARTIALLY_FILLED"),
        "cancelledOrders": count("CANCELLED"), "rejectedOrders": count("REJECTED"),
        "totalVolume": format(volume.normalize(), "f"), "totalFees": format(fees.normalize(), "f"),
    }  # fmt: skip
    filled = api.get("/api/positions/orders?status=FILLED&limit=100", headers=ana.headers).json()
    assert {o["status"] for o in filled["orders"]} == {"FILLED"} and filled["pagination"]["total"] == count(
        "FILLED"
    )
    assert api.get("/api/positions/orders?limit=1000", headers=ana.headers).status_code == 422
    assert api.get("/api/positions/orders?status=DONE", headers=ana.headers).status_code == 422
    assert [
        o["clientOrderId"] for o in api.get("/api/positions/orders", headers=ben.headers).json()["orders"]
    ] == ["ben-1"]


def test_pnl_comes_from_the_analytics_models(api):
    from xcoin_trading.analytics.snapshot import snapshot_all
    from xcoin_trading.analytics.warehouse import build_models

    ana, ben, _, _ = _book(api)
    before = api.get("/api/positions/pnl?period=all", headers=ana.headers)
    assert before.status_code == 503 and "not built yet" in before.json()["error"]
    settings = get_settings()
    snapshot_all(settings)
    build_models(settings)
    body = api.get("/api/positions/pnl?period=all", headers=ana.headers).json()
    assert Decimal(body["totalRealizedPnl"]) == (Decimal(41000) - Decimal(40000)) * Decimal("0.01") - Decimal(
        "0.81"
    )
    assert body["totalTrades"] == 1 and body["winRate"] == 100.0
    assert [d["date"] for d in body["dailyPnl"]] == [(T0 - timedelta(days=1)).date().isoformat()]
    assert api.get("/api/positions/pnl?period=all", headers=ben.headers).json()["totalTrades"] == 0
    assert api.get("/api/positions/pnl?period=2w", headers=ana.headers).status_code == 422


# ---- backtests ------------------------------------------------------------------------------


def test_backtest_history_shows_only_the_caller_s_runs(api):
    owner, other = signup(api), signup(api)
    public = new_strategy(api, owner, is_public=True)
    private = new_strategy(api, owner)
    with session_scope(get_settings()) as s:
        for user_id, ms in ((owner.id, 10), (other.id, 20), (None, 30), (owner.id, 40)):
            s.add(BacktestResult(strategy_id=public["id"], strategy_code=public["code"], user_id=user_id,
                                 config={"symbol": "BTCUSDT"}, metrics={"totalTrades": ms}, execution_time_ms=ms,
                                 created_at=T0 + timedelta(minutes=ms)))  # fmt: skip
    mine = api.get(f"/api/backtest/history/{public['id']}", headers=owner.headers).json()["backtests"]
    assert [b["executionTimeMs"] for b in mine] == [40, 30, 10]  # newest first; plus the CLI/Dagster run
    theirs = api.get(f"/api/backtest/history/{public['id']}?limit=5", headers=other.headers).json()[
        "backtests"
    ]
    assert [b["executionTimeMs"] for b in theirs] == [20]
    assert (
        len(
            api.get(f"/api/backtest/history/{public['id']}?limit=1", headers=owner.headers).json()[
                "backtests"
            ]
        )
        == 1
    )
    assert api.get(f"/api/backtest/history/{private['id']}", headers=other.headers).status_code == 404


def test_backtest_run_on_lake_candles_is_stored_in_the_caller_s_history(api):
    from tests.conftest import shared_data_file
    from tests.fixtures.marketdata import BTC_1M_JAN
    from xcoin_trading.marketdata.importer import import_candles

    user, other = signup(api), signup(api)
    sid = new_strategy(api, user, resolution="1m", is_public=True)["id"]
    body = {"strategyId": sid, "start": "2024-01-02", "end": "2024-01-02", "initialCapital": 5000}
    missing = api.post("/api/backtest/run", json=body, headers=user.headers)
    assert missing.status_code in (404, 422) and "BTCUSDT" in missing.json()["error"]  # no candles yet
    import_candles(shared_data_file(BTC_1M_JAN), "BTCUSDT", "1m",
                   start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 3, tzinfo=UTC), settings=get_settings())  # fmt: skip
    response = api.post("/api/backtest/run", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["strategyId"] == sid and result["config"]["start"] == "2024-01-02"
    seed_fields = {"totalTrades", "winningTrades", "losingTrades", "winRate", "totalPnl", "totalPnlPct", "avgWin",
                   "avgLoss", "largestWin", "largestLoss", "profitFactor", "sharpeRatio", "maxDrawdown",
                   "maxDrawdownPct", "averageTradeDuration", "totalCommission", "netPnl", "finalCapital"}  # fmt: skip
    assert seed_fields <= set(result["metrics"])
    metrics = result["metrics"]
    assert metrics["winningTrades"] + metrics["losingTrades"] <= metrics["totalTrades"]
    assert abs(metrics["finalCapital"] - (5000 + metrics["netPnl"])) < 1e-6  # capital moves by the net P&L
    history = api.get(f"/api/backtest/history/{sid}", headers=user.headers).json()["backtests"]
    assert [b["id"] for b in history] == [result["id"]]
    assert api.get(f"/api/backtest/history/{sid}", headers=other.headers).json()["backtests"] == []


def test_backtest_run_refuses_uploaded_code_huge_ranges_and_reversed_dates(api):
    user = signup(api)
    uploaded = new_strategy(api, user, builtin=None, source=LOOKAHEAD_SOURCE, params={})["id"]
    builtin = new_strategy(api, user, resolution="1m")["id"]
    cases = [
        ({"strategyId": uploaded, "start": "2024-01-02", "end": "2024-01-03"}, "strategyId"),
        ({"strategyId": builtin, "start": "2020-01-01", "end": "2024-01-01"}, "end"),
        ({"strategyId": builtin, "start": "2024-01-03", "end": "2024-01-02"}, "start"),
        (
            {"strategyId": builtin, "start": "2024-01-02", "end": "2024-01-03", "intrabar": "sometimes"},
            "intrabar",
        ),
    ]
    for body, field in cases:
        response = api.post("/api/backtest/run", json=body, headers=user.headers)
        assert response.status_code == 422 and response.json()["error"].startswith(field), response.json()
    assert api.get(f"/api/backtest/history/{builtin}", headers=user.headers).json()["backtests"] == []


# ---- health ---------------------------------------------------------------------------------


def test_health_reports_database_redis_and_exchange(api_factory, simulator, redis_url, monkeypatch):
    monkeypatch.setenv("COINDCX_API_URL", simulator.url)
    monkeypatch.setenv("XCOIN_REDIS_URL", redis_url)
    reset_settings()
    body = api_factory().get("/health").json()
    assert body["status"] == "ok"
    assert {k: v["status"] for k, v in body["checks"].items()} == {
        "database": "ok",
        "redis": "ok",
        "exchange": "ok",
    }


def test_health_is_degraded_when_the_exchange_is_unreachable(api_factory, monkeypatch):
    monkeypatch.setenv("COINDCX_API_URL", "http://127.0.0.1:9")
    reset_settings()
    response = api_factory().get("/health")
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert response.json()["checks"]["exchange"] == {
        "status": "error",
        "latencyMs": None,
        "detail": "exchange unreachable",
    }
