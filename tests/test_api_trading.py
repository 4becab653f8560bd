"""Positions, orders, P&L, backtests and health through HTTP against real Postgres (and the exchange
simulator where the exchange is involved). Trades, orders and backtest rows are written into the
store the way the live engine and the backtester write them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from tests.fixtures.api import LOOKAHEAD_SOURCE, add_keys, new_strategy, signup, subscribe
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import BacktestResult, Order, Trade

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
