"""Client signing and public market data against the simulator over loopback HTTP."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from tests.fixtures.marketdata import CANDLE_SCHEMA
from xcoin_trading.candles import exchange_window
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.auth import compact_json, sign
from xcoin_trading.exchange.client import CoinDCXClient, Credentials
from xcoin_trading.exchange.errors import AuthenticationError, InvalidRequest
from xcoin_trading.timeframes import EXCHANGE_INTERVALS, floor_ms

HOUR = 3_600_000


def test_signature_matches_documented_vectors():
    assert compact_json({"timestamp": 1700000000000}) == b'{"timestamp":1700000000000}'
    assert (
        sign("s3cr3t", compact_json({"timestamp": 1700000000000}))
        == "cb1d4c06a152a7a8255f9d0de8625b23f079506e65dbf102ed9d500042d071d2"
    )
    body = {
        "side": "buy",
        "order_type": "limit_order",
        "market": "BTCUSDT",
        "price_per_unit": 65000.5,
        "total_quantity": 0.001,
        "timestamp": 1700000000000,
        "client_order_id": "abc-1",
    }
    assert (
        sign("s3cr3t", compact_json(body))
        == "beb875531b9e109328611a3285c4bd8299cdb6f659e51fb0feb2e9a6652d4aa4"
    )


def test_credentials_never_show_the_secret():
    creds = Credentials("abcdefghijkl", "very-secret-value")
    for text in (repr(creds), str(creds), repr(CoinDCXClient("http://x", "http://x", creds))):
        assert "very-secret-value" not in text
        assert "abcdefghijkl" not in text


def _signed_post(url: str, secret: str, key: str, body: dict, tamper: bool = False) -> httpx.Response:
    payload = compact_json(body)
    headers = {
        "Content-Type": "application/json",
        "X-AUTH-APIKEY": key,
        "X-AUTH-SIGNATURE": sign(secret, payload),
    }
    if tamper:  # one byte changed after signing: 10000 -> 10001 in the timestamp's last digit
        payload = payload[:-2] + bytes([payload[-2] ^ 1]) + payload[-1:]
    return httpx.post(url + "/exchange/v1/users/balances", content=payload, headers=headers)


def test_simulator_rejects_a_changed_byte_and_a_stale_timestamp(simulator, sim_admin):
    sim_admin.add_account("k-sig", "s-sig", {"USDT": "5"})
    now = int(time.time() * 1000)
    ok = _signed_post(simulator.url, "s-sig", "k-sig", {"timestamp": now})
    assert ok.status_code == 200 and ok.json() == [
        {"currency": "USDT", "balance": "5", "locked_balance": "0"}
    ]
    tampered = _signed_post(simulator.url, "s-sig", "k-sig", {"timestamp": now}, tamper=True)
    assert tampered.status_code == 401
    assert tampered.json() == {"code": 401, "message": "Invalid credentials", "status": "error"}
    stale = _signed_post(simulator.url, "s-sig", "k-sig", {"timestamp": now - 60_000})
    assert stale.status_code == 401 and "window" in stale.json()["message"]
    wrong_secret = _signed_post(simulator.url, "not-it", "k-sig", {"timestamp": now})
    assert wrong_secret.status_code == 401


def test_client_with_wrong_secret_gets_authentication_error_without_the_secret(simulator, sim_admin):
    sim_admin.add_account("k-auth", "right-secret", {"USDT": "1"})
    client = CoinDCXClient(simulator.url, simulator.url, Credentials("k-auth", "wrong-secret-xyz"))
    with client, pytest.raises(AuthenticationError) as info:
        client.balances()
    assert "wrong-secret-xyz" not in str(info.value)


def test_ticker_and_markets_details(simulator):
    with CoinDCXClient(simulator.url, simulator.url) as client:
        tickers = {t.market: t for t in client.ticker()}
        details = client.markets_details()
        assert "BTCUSDT" in client.markets()
    traded = {m.symbol for m in details if m.status == "active" and m.base == "USDT"}
    assert set(tickers) == traded and len(traded) >= 40  # a realistic list, not a handful
    assert {m.symbol: m.status for m in details}["LUNAUSDT"] == "inactive"  # listed, not traded
    btc = tickers["BTCUSDT"]
    assert btc.bid < btc.last_price < btc.ask
    assert btc.low <= btc.last_price <= btc.high
    market = next(m for m in details if m.symbol == "BTCUSDT")
    assert (market.pair, market.target, market.base) == ("B-BTC_USDT", "BTC", "USDT")
    assert market.quantity_precision == 5 and market.step == Decimal("0.00001")


def test_unknown_symbol_is_refused_with_the_field_named(simulator):
    with CoinDCXClient(simulator.url, simulator.url) as client, pytest.raises(ValidationError) as info:
        client.fetch_candles("NOPEUSDT", "1m", 0, HOUR)
    assert info.value.field == "symbol" and "NOPEUSDT" in str(info.value)


def test_fetch_candles_paginates_and_returns_exactly_the_half_open_range(simulator):
    now = simulator.now_ms
    start, end = now - 2500 * 60_000 + 17, now - 30 * 60_000  # unaligned start
    with CoinDCXClient(simulator.url, simulator.url) as client:
        frame = client.fetch_candles("BTCUSDT", "1m", start, end)
    assert frame.schema == CANDLE_SCHEMA
    first_open = start - start % 60_000 + 60_000  # first minute at or after start
    expected = list(range(first_open, end, 60_000))
    assert frame["open_time"].to_list() == expected  # ascending, no gaps, no duplicates, end excluded


def test_hourly_candles_aggregate_the_minutes(simulator):
    now = simulator.now_ms
    start, end = now - 6 * HOUR, now
    with CoinDCXClient(simulator.url, simulator.url) as client:
        minutes = client.fetch_candles("B-BTC_USDT", "1m", start, end).rows(named=True)
        hours = client.fetch_candles("BTCUSDT", "1h", start, end).rows(named=True)
    assert len(hours) == 6
    for hour in hours:  # independent aggregation: a plain loop over the minutes
        inside = [m for m in minutes if hour["open_time"] <= m["open_time"] < hour["open_time"] + HOUR]
        assert len(inside) == 60
        assert hour["open"] == inside[0]["open"] and hour["close"] == inside[-1]["close"]
        assert hour["high"] == max(m["high"] for m in inside) and hour["low"] == min(m["low"] for m in inside)
        assert hour["volume"] == pytest.approx(sum(m["volume"] for m in inside))


def test_every_exchange_interval_is_served_aligned(simulator):
    now = simulator.now_ms
    with CoinDCXClient(simulator.url, simulator.url) as client:
        for interval in EXCHANGE_INTERVALS:
            start = floor_ms(now - 2 * 86_400_000, interval)  # the week/month that holds the feed's start
            frame = client.fetch_candles("ETHUSDT", interval, start, now)
            assert frame.height >= 1, interval
            assert all(floor_ms(t, interval) == t for t in frame["open_time"]), interval


def test_candles_never_show_the_future_and_advance_reveals_more(simulator, sim_admin):
    now = simulator.now_ms
    with CoinDCXClient(simulator.url, simulator.url) as client:
        before = client.fetch_candles("BTCUSDT", "1m", now - HOUR, now + HOUR)
        assert before["open_time"].max() == now - 60_000
        sim_admin.advance(now + 10 * 60_000)
        after = client.fetch_candles("BTCUSDT", "1m", now - HOUR, now + HOUR)
    assert after["open_time"].max() == now + 9 * 60_000
    assert after.height == before.height + 10


def test_bad_interval_gets_a_documented_error_body(simulator):
    reply = httpx.get(simulator.url + "/market_data/candles", params={"pair": "B-BTC_USDT", "interval": "7m"})
    assert reply.status_code == 422
    assert reply.json()["status"] == "error" and "interval" in reply.json()["message"]
    with CoinDCXClient(simulator.url, simulator.url) as client:
        with pytest.raises(ValidationError):
            client.fetch_candles("BTCUSDT", "7m", 0, HOUR)
        with pytest.raises(InvalidRequest):
            client.order_book("B-NOPE_USDT")


def test_candle_frame_sorts_and_drops_only_exact_duplicates():
    rows = [
        {"time": 180_000, "open": 3, "high": 3, "low": 3, "close": 3, "volume": 1},
        {"time": 60_000, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1},
        {"time": 60_000, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1},
        {"time": 120_000, "open": 2, "high": 2, "low": 2, "close": 2, "volume": 1},
        {
            "time": 120_000,
            "open": 9,
            "high": 9,
            "low": 9,
            "close": 9,
            "volume": 1,
        },  # conflicting: kept for QA
        {"time": 240_000, "open": 4, "high": 4, "low": 4, "close": 4, "volume": 1},  # at end: excluded
    ]
    frame = exchange_window(rows, 60_000, 240_000)
    assert frame["open_time"].to_list() == [60_000, 120_000, 120_000, 180_000]


def test_order_book_and_public_trades(simulator):
    with CoinDCXClient(simulator.url, simulator.url) as client:
        book = client.order_book("BTCUSDT")
        trades = client.public_trades("BTCUSDT", limit=5)
    assert book.bids[0][0] < book.asks[0][0]
    assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
    assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
    assert len(trades) == 5 and all(t.symbol == "BTCUSDT" and t.price > 0 for t in trades)
    assert trades[0].time > trades[-1].time


def test_error_body_is_json_with_code_message_status(simulator):
    reply = httpx.post(simulator.url + "/exchange/v1/orders/create", content=b"{}")
    assert reply.status_code == 401
    assert set(json.loads(reply.content)) == {"code", "message", "status"}


def test_realtime_simulator_publishes_each_candle_at_its_close_on_the_wall_clock():
    """A live run asks for the candle at its close: a realtime simulator must not lag the wall clock
    (its feeds sit on the minute grid, its clock must not)."""
    from xcoin_trading.exchange.simulator import SimulatorServer

    with SimulatorServer.random_walk(seed=3, realtime=True) as sim, CoinDCXClient(sim.url, sim.url) as client:
        for _ in range(3):
            now = int(time.time() * 1000)
            if now % 60_000 > 59_000:  # too close to the next boundary to tell; ask again after it
                time.sleep(1.5)
                continue
            last_close = floor_ms(now, "1m")
            candles = client.fetch_candles("BTCUSDT", "1m", last_close - 10 * 60_000, last_close)
            assert int(candles["open_time"][-1]) == last_close - 60_000
            assert abs(sim.now_ms - int(time.time() * 1000)) < 1_000
            return
