"""Parsing what CoinDCX sends (numbers as strings, ms or ISO times), rate-limit pacing, market
rounding, and the simulator's real-time clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.fixtures.exchange import funded_account
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.exchange.markets import BelowMinimum
from xcoin_trading.exchange.models import Balance, Order, parse_time
from xcoin_trading.exchange.ratelimit import Limit, RateLimiter
from xcoin_trading.exchange.simulator import Exchange, SimulatorServer


def test_times_parse_from_ms_seconds_fractional_ms_and_iso():
    expected = datetime(2024, 6, 14, 17, 31, 52, tzinfo=UTC)
    assert parse_time(1718386312000) == expected
    assert parse_time("1718386312000") == expected
    assert parse_time(1718386312) == expected  # ticker: seconds
    assert parse_time(1718386312000.3608).replace(microsecond=0) == expected
    assert parse_time("2024-06-14T17:31:52.000Z") == expected


def test_order_from_strings_and_numbers_is_exact():
    captured = {  # the 2024 active_orders capture style: strings and ISO times
        "id": "x1", "client_order_id": None, "market": "BTCUSDT", "side": "sell", "order_type": "limit_order",
        "status": "partially_filled", "total_quantity": "0.003", "remaining_quantity": "0.001",
        "avg_price": "65483.14", "price_per_unit": 65490.5, "fee_amount": "0.13096628",
        "created_at": "2024-06-15T15:08:40.430Z", "updated_at": 1718464120430,
    }  # fmt: skip
    order = Order.from_spot(captured)
    assert order.filled_quantity == Decimal("0.002") and order.price == Decimal("65490.5")
    assert order.fee_amount == Decimal("0.13096628") and order.is_open
    assert order.created_at == order.updated_at == datetime(2024, 6, 15, 15, 8, 40, 430000, tzinfo=UTC)
    assert Balance.from_json(
        {"currency": "USDT", "balance": 67.63, "locked_balance": "6.67"}
    ).total == Decimal("74.30")


def test_rate_limiter_lets_a_burst_through_then_paces():
    limiter = RateLimiter(general=(Limit(4, 1),), endpoints={"cancel_all": Limit(2, 60)})
    waits = [limiter.reserve("k", "status") for _ in range(6)]
    assert waits[:4] == [0, 0, 0, 0] and 0.2 < waits[4] <= 0.26 and 0.45 < waits[5] <= 0.51
    assert limiter.reserve("other-key", "status") == 0  # per key
    assert [limiter.reserve("k2", "cancel_all") > 0 for _ in range(3)] == [False, False, True]
    assert RateLimiter().bound_per_second("create", keys=1) == pytest.approx(16)
    assert RateLimiter().bound_per_second("cancel_all", keys=1) == pytest.approx(0.5)


def test_market_rounding_and_minimums():
    btc = default_market("BTCUSDT")
    assert btc.round_quantity(Decimal("0.0123456")) == Decimal("0.01234")  # down, never up
    assert btc.round_price(Decimal("65000.125")) == Decimal("65000.12")
    with pytest.raises(BelowMinimum) as info:
        btc.check_order(Decimal("0.00005"), Decimal("60000"))  # 3 USDT < 5 USDT
    assert info.value.field == "notional" and "5" in info.value.reason


def test_realtime_clock_processes_candles_as_time_passes():
    ex = Exchange.random_walk(seed=2, realtime=True, speed=1200)  # 20 simulated minutes per second
    with SimulatorServer(ex) as sim:
        acct = funded_account(sim)
        started = ex.clock.now()
        time.sleep(0.3)
        frame = acct.client.fetch_candles("BTCUSDT", "1m", started - 60_000, started + 3_600_000)
        assert frame.height >= 5  # ≥ 6 simulated minutes passed
        assert frame["open_time"].max() + 60_000 <= ex.clock.now()
        acct.close()
