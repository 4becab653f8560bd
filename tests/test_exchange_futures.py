"""Futures through the real client: leverage, margin, LONG/SHORT, TP/SL on real candles, gaps, liquidation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from tests.conftest import shared_data_file
from tests.fixtures.exchange import funded_account
from xcoin_trading.exchange.errors import InsufficientFunds, InvalidRequest
from xcoin_trading.exchange.simulator import Exchange, SimulatorServer
from xcoin_trading.exchange.simulator.engine import SimClock
from xcoin_trading.exchange.simulator.feed import CandleFeed

PAIR = "B-BTC_USDT"
FEE = Decimal("0.0005")
MINUTE = 60_000
TICK = Decimal("0.1")  # B-BTC_USDT futures price increment: feed prices land on it (half-even)
D = lambda x: Decimal(repr(float(x))).quantize(TICK)  # noqa: E731


def _usdt(acct) -> tuple[Decimal, Decimal]:
    b = acct.client.balance("USDT")
    return b.balance, b.locked_balance


def test_long_with_leverage_locks_margin_and_attaches_tp_sl(account):
    c = account.client
    c.futures_set_leverage(PAIR, 5)
    price = next(t.last_price for t in c.ticker() if t.market == "BTCUSDT").quantize(TICK)
    tp, sl = (
        (price * Decimal("1.02")).quantize(Decimal("0.1")),
        (price * Decimal("0.98")).quantize(Decimal("0.1")),
    )
    order = c.futures_create_order(
        PAIR,
        "buy",
        "market_order",
        "0.01",
        leverage=5,
        take_profit_price=tp,
        stop_loss_price=sl,
        client_order_id="f-1",
    )
    assert order.status == "filled" and order.avg_price == price and order.client_order_id == "f-1"
    [pos] = c.futures_positions()
    margin = Decimal("0.01") * price / 5
    assert (pos.pair, pos.active_pos, pos.avg_price, pos.locked_margin) == (
        PAIR,
        Decimal("0.01"),
        price,
        margin,
    )
    assert (pos.take_profit_trigger, pos.stop_loss_trigger, pos.leverage) == (tp, sl, Decimal(5))
    free, locked = _usdt(account)
    assert locked == margin and free == Decimal(10000) - margin - Decimal("0.01") * price * FEE
    untriggered = c.futures_orders(statuses=["untriggered"])
    assert sorted(o.order_type for o in untriggered) == ["stop_market", "take_profit_market"]
    with pytest.raises(InvalidRequest, match="leverage"):
        c.futures_create_order(PAIR, "buy", "market_order", "0.01", leverage=3)
    with pytest.raises(InvalidRequest, match="leverage"):
        c.futures_set_leverage(PAIR, 3)
    with pytest.raises(InsufficientFunds):
        c.futures_create_order(PAIR, "buy", "market_order", "5")


def test_short_then_exit_realises_pnl_minus_both_fees(simulator, account, sim_admin):
    c = account.client
    entry = c.futures_create_order(PAIR, "sell", "market_order", "0.02")
    [pos] = c.futures_positions(pairs=[PAIR])
    assert pos.active_pos == Decimal("-0.02") and pos.side == "short"
    sim_admin.advance(simulator.now_ms + 45 * MINUTE)
    last = c.fetch_candles("BTCUSDT", "1m", simulator.now_ms - MINUTE, simulator.now_ms)["close"][-1]
    c.futures_exit_position(pos.id)
    [flat] = c.futures_positions()
    assert flat.active_pos == 0 and flat.locked_margin == 0
    exit_order = next(o for o in c.futures_orders(statuses=["filled"]) if o.stage == "exit")
    assert exit_order.avg_price == D(last) and exit_order.side == "buy"
    pnl = (entry.avg_price - D(last)) * Decimal("0.02")  # short: entry − exit
    fees = (entry.avg_price + D(last)) * Decimal("0.02") * FEE
    assert _usdt(account) == (Decimal(10000) + pnl - fees, Decimal(0))


def test_create_tpsl_on_a_position_and_duplicate_leg_is_refused(account):
    c = account.client
    c.futures_create_order(PAIR, "buy", "market_order", "0.01")
    [pos] = c.futures_positions()
    tp, sl = (
        (pos.avg_price * Decimal("1.05")).quantize(Decimal("0.1")),
        (pos.avg_price * Decimal("0.95")).quantize(Decimal("0.1")),
    )
    legs = c.futures_create_tpsl(pos.id, take_profit=tp, stop_loss=sl)
    assert legs["take_profit"].status == "untriggered" and legs["take_profit"].stop_price == tp
    assert legs["stop_loss"].order_type == "stop_market"
    again = c.futures_create_tpsl(pos.id, take_profit=tp + 100)
    assert "already exists" in str(again["take_profit"])
    c.futures_cancel_order(legs["take_profit"].id)
    moved = c.futures_create_tpsl(pos.id, take_profit=tp + 100)
    assert moved["take_profit"].stop_price == tp + 100


def _first_exit(candles, long: bool, tp: Decimal, sl: Decimal):
    """Independent walk of the path: first candle touching SL or TP (SL first), gap → open."""
    for k in candles:
        o, h, lo = D(k["open"]), D(k["high"]), D(k["low"])
        sl_hit = lo <= sl if long else h >= sl
        tp_hit = h >= tp if long else lo <= tp
        if sl_hit:
            return "stop_market", (min(sl, o) if long else max(sl, o)), k["open_time"]
        if tp_hit:
            return "take_profit_market", (max(tp, o) if long else min(tp, o)), k["open_time"]
    return None


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_attached_tp_sl_trigger_on_replayed_real_candles(simulator_factory, side):
    sim = simulator_factory(replay=shared_data_file("BTCUSDT-1m-2024-01.parquet"), symbol="BTCUSDT")
    acct = funded_account(sim)
    c = acct.client
    c.futures_set_leverage(PAIR, 3)
    start = sim.now_ms
    entry = c.futures_create_order(PAIR, side, "market_order", "0.01", leverage=3)
    long = side == "buy"
    up, down = (
        (entry.avg_price * Decimal("1.004")).quantize(Decimal("0.1")),
        (entry.avg_price * Decimal("0.996")).quantize(Decimal("0.1")),
    )
    tp, sl = (up, down) if long else (down, up)
    c.futures_create_tpsl(c.futures_positions()[0].id, take_profit=tp, stop_loss=sl)
    acct.admin.advance(start + 12 * 60 * MINUTE)
    candles = c.fetch_candles("BTCUSDT", "1m", start, start + 12 * 60 * MINUTE).rows(named=True)
    expected = _first_exit(candles, long, tp, sl)
    assert expected is not None, "pick a wider window: nothing triggered"
    kind, price, open_time = expected
    [pos] = c.futures_positions()
    assert pos.active_pos == 0
    legs = {o.order_type: o for o in c.futures_orders() if o.stage == "tpsl_exit"}
    fired = legs[kind]
    other = legs["take_profit_market" if kind == "stop_market" else "stop_market"]
    assert fired.status == "filled" and fired.avg_price == price
    assert fired.updated_at.timestamp() * 1000 == open_time + MINUTE
    assert other.status == "cancelled"
    pnl = (price - entry.avg_price) * Decimal("0.01") * (1 if long else -1)
    fees = (entry.avg_price + price) * Decimal("0.01") * FEE
    assert _usdt(acct) == (Decimal(10000) + pnl - fees, Decimal(0))
    acct.close()


def _designed_exchange(closes: list[float], opens: list[float] | None = None) -> Exchange:
    """BTC candles with a chosen path (others flat) and the clock after the first candle."""
    n = len(closes)
    t0 = 1_704_067_200_000
    times = np.arange(t0, t0 + n * MINUTE, MINUTE, dtype=np.int64)
    c = np.array(closes, dtype=float)
    o = np.array(opens if opens is not None else [closes[0], *closes[:-1]], dtype=float)
    feeds = {"BTC": CandleFeed("BTC", "1m", times, o, np.maximum(o, c), np.minimum(o, c), c, np.ones(n))}
    return Exchange(feeds, SimClock(t0 + MINUTE))


@contextmanager
def _designed_account(
    closes: list[float], opens: list[float] | None = None
) -> Iterator[tuple[Exchange, Any]]:
    """A funded account on a simulator serving these candles: (the exchange, the account)."""
    ex = _designed_exchange(closes, opens)
    with SimulatorServer(ex) as sim:
        acct = funded_account(sim)
        try:
            yield ex, acct
        finally:
            acct.close()


def test_stop_loss_gapped_through_fills_at_the_open():
    with _designed_account([50000, 50000, 47000], opens=[50000, 50000, 48000]) as (ex, acct):
        c = acct.client
        c.futures_set_leverage(PAIR, 2)
        c.futures_create_order(PAIR, "buy", "market_order", "0.1", stop_loss_price="49000")
        acct.admin.advance(ex.clock.now() + 2 * MINUTE)
        sl = next(o for o in c.futures_orders() if o.order_type == "stop_market")
        assert sl.status == "filled" and sl.avg_price == Decimal(48000)  # the open, not the stop
        pnl = (Decimal(48000) - Decimal(50000)) * Decimal("0.1")
        fees = (Decimal(50000) + Decimal(48000)) * Decimal("0.1") * FEE
        assert _usdt(acct) == (Decimal(10000) + pnl - fees, Decimal(0))


def test_liquidation_loses_exactly_the_margin():
    with _designed_account([50000, 50000, 49000, 47000, 47000]) as (ex, acct):
        c = acct.client
        c.futures_set_leverage(PAIR, 20)
        c.futures_create_order(PAIR, "buy", "market_order", "0.1")
        [pos] = c.futures_positions()
        # liquidation price by hand: 50000 × (1 − 1/20 + 0.005) = 47750
        assert pos.liquidation_price == Decimal(47750)
        acct.admin.advance(ex.clock.now() + 4 * MINUTE)
        [pos] = c.futures_positions()
        assert pos.active_pos == 0
        liquidation = next(o for o in c.futures_orders() if o.stage == "liquidate")
        assert liquidation.avg_price == Decimal(47750)
        margin = Decimal(50000) * Decimal("0.1") / 20
        assert _usdt(acct) == (Decimal(10000) - margin - Decimal(5000) * FEE, Decimal(0))


def test_resting_limit_entry_fills_on_the_path_and_then_its_triggers_arm():
    with _designed_account([50000, 50000, 49500, 49000, 51500]) as (ex, acct):
        c = acct.client
        order = c.futures_create_order(PAIR, "buy", "limit_order", "0.1", "49600", take_profit_price="51000")
        assert order.status == "open"
        assert _usdt(acct)[1] == Decimal("0.1") * 49600 + Decimal("0.1") * 49600 * FEE  # leverage 1
        acct.admin.advance(ex.clock.now() + 4 * MINUTE)
        entry = next(o for o in c.futures_orders() if o.id == order.id)
        assert entry.status == "filled" and entry.avg_price == Decimal(49600)
        tp = next(o for o in c.futures_orders() if o.order_type == "take_profit_market")
        assert tp.status == "filled" and tp.avg_price == Decimal(51000)


def test_futures_instrument_gives_the_futures_sizing_rules(account):
    market = account.client.futures_instrument(PAIR)
    assert (market.kind, market.tick, market.step, market.max_leverage) == (
        "futures",
        TICK,
        Decimal("0.001"),
        Decimal(25),
    )
    assert market.round_quantity(Decimal("0.01234")) == Decimal("0.012")
    with pytest.raises(InvalidRequest, match="divisible"):
        account.client.futures_create_order(PAIR, "buy", "market_order", "0.0105")
