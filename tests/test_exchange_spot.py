"""Spot trading through the real client against the simulator: fills, locking, errors, ledger."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest

from tests.fixtures.exchange import funded_account
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.errors import (
    BelowMinimumError,
    DuplicateOrder,
    InsufficientFunds,
    InvalidRequest,
    OrderNotFound,
)

FEE = Decimal("0.001")
MINUTE = 60_000


def _price(account) -> Decimal:
    return next(t.last_price for t in account.client.ticker() if t.market == "BTCUSDT")


def _free(account, currency: str) -> Decimal:
    return account.client.balance(currency).balance


def _locked(account, currency: str) -> Decimal:
    return account.client.balance(currency).locked_balance


def test_market_buy_fills_at_last_price_and_charges_the_fee(account):
    price = _price(account)
    order = account.client.create_order("BTCUSDT", "buy", "market_order", "0.01", client_order_id="mkt-1")
    assert order.status == "filled" and order.avg_price == price
    assert order.filled_quantity == Decimal("0.01") and order.client_order_id == "mkt-1"
    cost = Decimal("0.01") * price
    assert order.fee_amount == cost * FEE
    assert _free(account, "USDT") == Decimal(10000) - cost - cost * FEE
    assert _free(account, "BTC") == Decimal("0.01")
    assert order.created_at.tzinfo is not None
    trades = account.client.trade_history(symbol="BTCUSDT")
    assert [(t.order_id, t.quantity, t.price, t.fee_amount) for t in trades] == [
        (order.id, Decimal("0.01"), price, cost * FEE)
    ]


def test_resting_limit_locks_funds_and_cancel_releases_them(account):
    c = account.client
    price = _price(account)
    limit = (price * Decimal("0.9")).quantize(Decimal("0.01"))
    order = c.create_order("BTCUSDT", "buy", "limit_order", "0.02", limit, client_order_id="lim-1")
    assert order.status == "open" and order.remaining_quantity == Decimal("0.02")
    locked = Decimal("0.02") * limit * (1 + FEE)
    assert _locked(account, "USDT") == locked and _free(account, "USDT") == Decimal(10000) - locked
    active = c.active_orders("BTCUSDT")
    assert [o.id for o in active] == [order.id] and active[0].created_at == order.created_at  # ISO parsed
    assert c.active_orders_count("BTCUSDT") == 1
    assert c.order_status(client_order_id="lim-1").id == order.id
    c.cancel_order(id=order.id)
    assert c.order_status(id=order.id).status == "cancelled"
    assert _locked(account, "USDT") == 0 and _free(account, "USDT") == Decimal(10000)
    with pytest.raises(InvalidRequest, match="cannot be cancelled"):
        c.cancel_order(id=order.id)


def test_marketable_limit_fills_at_once_at_the_better_price(account):
    price = _price(account)
    order = account.client.create_order("BTCUSDT", "buy", "limit_order", "0.01", price + 500)
    assert order.status == "filled" and order.avg_price == price


def test_coins_locked_by_a_sell_cannot_be_sold_twice(account):
    c = account.client
    c.create_order("BTCUSDT", "buy", "market_order", "0.01")
    price = _price(account)
    c.create_order("BTCUSDT", "sell", "limit_order", "0.01", price * 2)
    assert _locked(account, "BTC") == Decimal("0.01") and _free(account, "BTC") == 0
    with pytest.raises(InsufficientFunds):
        c.create_order("BTCUSDT", "sell", "limit_order", "0.01", price * 2)
    with pytest.raises(InsufficientFunds):
        c.create_order("BTCUSDT", "sell", "market_order", "0.01")


def test_limit_buy_fills_when_a_candle_trades_through_it(simulator, account, sim_admin):
    c = account.client
    now = simulator.now_ms
    feed = simulator.exchange.feeds["BTC"]  # the test's oracle: the candles about to be replayed
    i0 = feed.closed_count(now)
    lowest = Decimal(repr(float(feed.low[i0 : i0 + 30].min())))
    limit = lowest + Decimal("0.01")
    assert limit < _price(account)
    order = c.create_order("BTCUSDT", "buy", "limit_order", "0.01", limit)
    assert order.status == "open"
    sim_admin.advance(now + 30 * MINUTE)
    candles = c.fetch_candles("BTCUSDT", "1m", now, now + 30 * MINUTE).rows(named=True)
    hit = next(k for k in candles if Decimal(repr(k["low"])) <= limit)  # plain scan for the first cross
    expected = min(limit, Decimal(repr(hit["open"])))
    filled = c.order_status(id=order.id)
    assert filled.status == "filled" and filled.avg_price == expected
    assert filled.updated_at.timestamp() * 1000 == hit["open_time"] + MINUTE
    assert _locked(account, "USDT") == 0
    assert _free(account, "USDT") == Decimal(10000) - Decimal("0.01") * expected * (1 + FEE)


def test_partial_fills_follow_candle_liquidity(simulator, sim_admin):
    sim_admin.configure(liquidity_fraction="0.001")
    acct = funded_account(simulator, {"USDT": "100000"})
    c = acct.client
    now = simulator.now_ms
    feed = simulator.exchange.feeds["BTC"]
    i0 = feed.closed_count(now)
    price = Decimal(repr(float(feed.close[i0 - 1])))
    # A buy just below the price (so it rests) that the next candle's low reaches.
    next_low = Decimal(repr(float(feed.low[i0])))
    next_open = Decimal(repr(float(feed.open[i0])))
    limit = min(price - Decimal("0.01"), max(next_low, next_open - 1)).quantize(Decimal("0.01"))
    assert next_low <= limit < price
    order = c.create_order("BTCUSDT", "buy", "limit_order", "1", limit)
    sim_admin.advance(now + MINUTE)
    per_candle = (Decimal(repr(float(feed.volume[i0]))) * Decimal("0.001")).quantize(
        Decimal("0.00001"), ROUND_DOWN
    )
    assert 0 < per_candle < 1
    partial = c.order_status(id=order.id)
    assert partial.status == "partially_filled" and partial.filled_quantity == per_candle
    c.cancel_order(id=order.id)
    done = c.order_status(id=order.id)
    assert done.status == "partially_cancelled" and done.filled_quantity == per_candle
    assert _locked(acct, "USDT") == 0
    acct.close()


def test_documented_errors_are_typed(account):
    c = account.client
    price = _price(account)
    with pytest.raises(BelowMinimumError, match="Minimum order value"):
        c.create_order("BTCUSDT", "buy", "market_order", "0.00005")  # ≈ 3 USDT < 5 USDT
    with pytest.raises(InvalidRequest, match="divisible"):
        c.create_order("BTCUSDT", "buy", "market_order", "0.000011")
    with pytest.raises(InsufficientFunds):
        c.create_order("BTCUSDT", "buy", "market_order", "1")
    with pytest.raises(OrderNotFound):
        c.order_status(id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidRequest, match="not valid"):
        c.create_order("NOPEUSDT", "buy", "market_order", "1")
    with pytest.raises(InvalidRequest, match="Price"):
        c.create_order("BTCUSDT", "buy", "limit_order", "0.001", price / 2 + Decimal("0.001"))
    c.create_order(
        "BTCUSDT", "buy", "limit_order", "0.001", (price / 2).quantize(Decimal("0.01")), client_order_id="dup"
    )
    with pytest.raises(DuplicateOrder):
        c.create_order(
            "BTCUSDT",
            "buy",
            "limit_order",
            "0.001",
            (price / 2).quantize(Decimal("0.01")),
            client_order_id="dup",
        )
    with pytest.raises(ValidationError) as info:
        c.create_order("BTCUSDT", "hold", "market_order", "1")
    assert info.value.field == "side"
    with pytest.raises(ValidationError) as info:
        c.create_order("BTCUSDT", "buy", "market_order", "-1")
    assert info.value.field == "quantity"
    assert _free(account, "BTC") == 0  # nothing changed by refused orders


def test_at_most_25_open_orders_per_market(simulator):
    acct = funded_account(simulator, {"USDT": "100000"})
    c = acct.client
    price = (_price(acct) / 2).quantize(Decimal("0.01"))
    for i in range(25):
        c.create_order("BTCUSDT", "buy", "limit_order", "0.001", price - i)
    with pytest.raises(InvalidRequest, match="25"):
        c.create_order("BTCUSDT", "buy", "limit_order", "0.001", price)
    c.cancel_all("BTCUSDT")
    assert c.active_orders_count("BTCUSDT") == 0 and _locked(acct, "USDT") == 0
    acct.close()


def test_multiple_orders_status_cancel_by_ids_and_edit(account):
    c = account.client
    price = _price(account)
    low = (price * Decimal("0.8")).quantize(Decimal("0.01"))
    results = c.create_orders(
        [
            {
                "market": "BTCUSDT",
                "side": "buy",
                "order_type": "limit_order",
                "quantity": "0.001",
                "price": low,
                "client_order_id": "m-1",
            },
            {
                "market": "BTCUSDT",
                "side": "buy",
                "order_type": "limit_order",
                "quantity": "0.001",
                "price": low - 1,
                "client_order_id": "m-2",
            },
            {
                "market": "BTCUSDT",
                "side": "sell",
                "order_type": "limit_order",
                "quantity": "5",
                "price": price * 2,
                "client_order_id": "m-3",
            },
        ]
    )
    assert [type(r).__name__ for r in results] == ["Order", "Order", "InsufficientFunds"]
    by_client = c.order_status_multiple(client_order_ids=["m-1", "m-2", "nope"])
    assert sorted(o.client_order_id for o in by_client) == ["m-1", "m-2"]
    edited = c.edit_price(low - 100, client_order_id="m-1")
    assert edited.price == low - 100
    assert _locked(account, "USDT") == Decimal("0.001") * ((low - 100) + (low - 1)) * (1 + FEE)
    c.cancel_by_ids(client_order_ids=["m-1", "m-2"])
    assert {o.status for o in c.order_status_multiple(ids=[r.id for r in results[:2]])} == {"cancelled"}
    assert c.user_info()["coindcx_id"].startswith("sim-")


def test_ledger_accounts_for_every_unit(account):
    c = account.client
    c.create_order("BTCUSDT", "buy", "market_order", "0.01")
    price = _price(account)
    sell = c.create_order("BTCUSDT", "sell", "limit_order", "0.004", price * 2)
    c.create_order("BTCUSDT", "sell", "market_order", "0.006")
    c.cancel_order(id=sell.id)
    totals: dict[str, Decimal] = {}
    for entry in account.ledger():
        totals[entry["currency"]] = (
            totals.get(entry["currency"], Decimal(0))
            + Decimal(entry["free_delta"])
            + Decimal(entry["locked_delta"])
        )
    for balance in c.balances():
        assert totals[balance.currency] == balance.total
    fees = sum((t.fee_amount for t in c.trade_history()), Decimal(0))
    assert fees == sum(
        (-Decimal(e["free_delta"]) for e in account.ledger() if e["kind"] == "fee"), Decimal(0)
    )
