"""Position sizing (seed formula, cap, market rounding) and entry limits, as backtest and live use them."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import FUTURES_MARKETS, SPOT_MARKETS, BelowMinimum
from xcoin_trading.risk import (
    SIZE_BELOW_MIN_NOTIONAL,
    SIZE_BELOW_MIN_QTY,
    SIZE_OK,
    check_entry_limits,
    market_rounding_args,
    size_position,
    size_position_float,
)

BTC = SPOT_MARKETS["BTCUSDT"]


def test_stop_based_size_is_risk_over_distance_rounded_down_to_the_step():
    # risk = 10000 × 0.02 = 200 USDT; |42000 − 41160| = 840 → 0.238095… BTC → step 0.00001 → 0.23809
    size = size_position(
        capital="10000", risk_per_trade="0.02", entry_price="42000", stop_loss="41160", market=BTC
    )
    assert size.risk_amount == Decimal("200.00")
    assert size.quantity == Decimal("0.23809")
    assert not size.capped


def test_size_without_stop_is_risk_times_leverage_over_entry():
    # 10000 × 0.05 × 3 / 25000 = 0.06 BTC
    size = size_position(capital=10000, risk_per_trade="0.05", entry_price=25000, stop_loss=None, leverage=3)
    assert size.quantity == Decimal("0.06")


def test_leverage_multiplies_the_stop_based_size():
    one = size_position(capital=10000, risk_per_trade="0.01", entry_price=100, stop_loss=95, leverage=1)
    five = size_position(capital=10000, risk_per_trade="0.01", entry_price=100, stop_loss=95, leverage=5)
    assert one.quantity == Decimal(20)  # 100 / 5
    assert five.quantity == Decimal(100)


def test_size_is_capped_to_what_the_capital_can_carry_with_fees():
    # Formula: 1000 × 0.5 / 1 = 500 units of a 100 coin = 50,000 notional; cap at 1× leverage and
    # 0.1 % fee: 1000 / (100 × 1.001) = 9.99000999…
    size = size_position(capital=1000, risk_per_trade="0.5", entry_price=100, stop_loss=99, fee_rate="0.001")
    assert size.capped
    assert abs(size.quantity - Decimal(1000) / Decimal("100.1")) < Decimal("1e-20")
    # With 10× leverage the margin is notional / 10: cap = 1000 / (100 × (0.1 + 0.001)) = 99.0099…
    lev = size_position(
        capital=1000, risk_per_trade="0.5", entry_price=100, stop_loss=99, leverage=10, fee_rate="0.001"
    )
    assert abs(lev.quantity - Decimal(1000) / Decimal("10.1")) < Decimal("1e-20")


def test_order_below_the_market_minimum_notional_is_refused_with_the_reason():
    with pytest.raises(BelowMinimum, match="below the minimum order value 5 USDT"):
        size_position(capital=100, risk_per_trade="0.01", entry_price=42000, stop_loss=None, market=BTC)


def test_leverage_above_the_futures_market_limit_is_refused():
    market = FUTURES_MARKETS["B-BTC_USDT"]
    with pytest.raises(ValidationError, match="leverage must be <= 25"):
        size_position(
            capital=1000, risk_per_trade="0.01", entry_price=100, stop_loss=99, leverage=50, market=market
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capital": 0}, "capital must be > 0, got 0"),
        ({"risk_per_trade": "1.5"}, "risk_per_trade must be in (0, 1], got 1.5"),
        ({"risk_per_trade": 0}, "risk_per_trade must be in (0, 1]"),
        ({"leverage": 0}, "leverage must be >= 1, got 0"),
        ({"entry_price": -1}, "entry_price must be > 0"),
        ({"stop_loss": 100}, "stop_loss must be > 0 and differ from the entry"),
        ({"fee_rate": "-0.001"}, "fee_rate must be in [0, 1)"),
    ],
)
def test_bad_sizing_input_names_the_field(kwargs, message):
    args = {"capital": 1000, "risk_per_trade": "0.02", "entry_price": 100, "stop_loss": 98} | kwargs
    with pytest.raises(ValidationError) as err:
        size_position(**args)
    assert str(err.value) == message or str(err.value).startswith(message)


@pytest.mark.parametrize(
    "market", [SPOT_MARKETS["BTCUSDT"], SPOT_MARKETS["XRPUSDT"], FUTURES_MARKETS["B-SOL_USDT"], None]
)
def test_kernel_float_sizing_agrees_with_the_decimal_sizing(market):
    rng = random.Random(7)
    step, decimals, min_q, min_notional, max_q = market_rounding_args(market)
    checked = 0
    for _ in range(2000):
        capital = round(rng.uniform(50, 200_000), 2)
        risk = round(rng.uniform(0.001, 0.2), 4)
        entry = round(rng.uniform(0.3, 90_000), 4)
        stop = None if rng.random() < 0.2 else round(entry * rng.uniform(0.9, 1.1), 4)
        if stop == entry:
            continue
        leverage = rng.choice([1, 2, 5, 10])
        fee = rng.choice([0.0, 0.0005, 0.001])
        q, code = size_position_float(
            capital,
            risk,
            entry,
            float("nan") if stop is None else stop,
            leverage,
            fee,
            step,
            decimals,
            min_q,
            min_notional,
            max_q,
        )
        try:
            exact = size_position(
                capital=capital,
                risk_per_trade=risk,
                entry_price=entry,
                stop_loss=stop,
                leverage=leverage,
                fee_rate=fee,
                market=market,
            )
        except BelowMinimum as exc:
            assert code == (SIZE_BELOW_MIN_QTY if exc.field == "quantity" else SIZE_BELOW_MIN_NOTIONAL)
            continue
        assert code == SIZE_OK
        if market is None:
            assert q == pytest.approx(float(exact.quantity), rel=1e-12)
        else:
            assert q == float(exact.quantity)
        checked += 1
    assert checked > 500


def test_entry_limits_name_the_limit_that_stops_a_new_position():
    assert check_entry_limits(open_positions=2, max_open_positions=3).allowed
    blocked = check_entry_limits(open_positions=3, max_open_positions=3)
    assert not blocked.allowed and "max open positions reached: 3 of 3" in blocked.reason

    def after_losing(pnl_today: str):  # 5% of 1000 is the most one day may lose
        return check_entry_limits(
            open_positions=0,
            max_open_positions=None,
            realised_pnl_today=pnl_today,
            capital=1000,
            max_daily_loss_pct="0.05",
        )

    assert after_losing("-49.99").allowed
    hit = after_losing("-50")
    assert not hit.allowed and "max daily loss reached" in hit.reason
    with pytest.raises(ValidationError, match="max_daily_loss_pct must be in"):
        check_entry_limits(open_positions=0, max_open_positions=None, capital=1000, max_daily_loss_pct=2)
    with pytest.raises(ValidationError, match="max_open_positions must be >= 1"):
        check_entry_limits(open_positions=0, max_open_positions=0)
