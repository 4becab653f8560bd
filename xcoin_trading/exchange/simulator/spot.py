"""Spot matching: market and limit orders, balance locking, fills on the candle path, cancels.

Simulator choices (real behaviour undocumented or unobservable here):
- Market orders fill at once, in full, at the current price × (1 ± slippage) rounded to the price
  precision. A marketable limit fills at once at the better of the current price and its limit.
- Resting limits fill when a candle trades through them: at the limit, or at the candle's open when
  the candle opens beyond it (gap → the better price). With `liquidity_fraction` set, one order
  fills at most that share of each candle's volume (partial fills).
- Fees: `spot_fee_rate` of the notional, charged in the quote currency on both sides (FAQ: fee is
  in the base/price currency). A resting buy locks quantity × limit × (1 + fee rate).
- `edit` and `create_multiple` work on every market (the real ones may be INR-only).
- Cancelling a terminal order: 422 "This order cannot be cancelled"; an unknown id: 404
  "Order not found". `remaining_quantity` stays as it was after a cancel (2024 captures).
- A duplicate `client_order_id` on one account: 422 "Client order id already exists".
- `active_orders` answers in the 2024 captured shape `{"orders": [...]}` with ISO timestamps.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.simulator.accounts import ZERO, Account, SimError
from xcoin_trading.exchange.simulator.venue import Venue
from xcoin_trading.exchange.simulator.wire import (
    iso_ms,
    jnum,
    new_id,
    req_decimal,
    req_order,
    to_decimal,
)

OPEN = ("open", "partially_filled")


class SpotOrder:
    __slots__ = (
        "id", "client_order_id", "account", "market", "side", "order_type", "status", "price",
        "total", "remaining", "avg_price", "filled_notional", "fee_amount", "created_at", "updated_at", "lock_rate",
    )  # fmt: skip

    def __init__(
        self,
        account: Account,
        market: Market,
        side: str,
        order_type: str,
        price: Decimal,
        total: Decimal,
        client_order_id: str | None,
        now: int,
        lock_rate: Decimal,
    ):
        self.id = new_id()
        self.client_order_id = client_order_id
        self.account = account
        self.market = market
        self.side = side
        self.order_type = order_type
        self.status = "open"
        self.price = price
        self.total = total
        self.remaining = total
        self.avg_price = ZERO
        self.filled_notional = ZERO
        self.fee_amount = ZERO
        self.created_at = now
        self.updated_at = now
        self.lock_rate = lock_rate  # buy: quote locked per unit of quantity

    def to_json(self, fee_pct: Decimal, iso: bool = False) -> dict[str, Any]:
        stamp = iso_ms if iso else int
        fee = jnum(fee_pct)
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "market": self.market.symbol,
            "order_type": self.order_type,
            "side": self.side,
            "status": self.status,
            "fee_amount": jnum(self.fee_amount),
            "fee": fee,
            "maker_fee": fee,
            "taker_fee": fee,
            "total_quantity": jnum(self.total),
            "remaining_quantity": jnum(self.remaining),
            "source": "api",
            "avg_price": jnum(self.avg_price),
            "price_per_unit": jnum(self.price),
            "stop_price": 0.0,
            "time_in_force": "good_till_cancel",
            "created_at": stamp(self.created_at),
            "updated_at": stamp(self.updated_at),
            "trades": None,
        }


class SpotDesk:
    def __init__(self, exchange: Venue):
        self.ex = exchange
        self.resting: dict[str, dict[str, SpotOrder]] = {}  # symbol -> id -> order

    @property
    def fee_rate(self) -> Decimal:
        return self.ex.config.spot_fee_rate

    def json(self, order: SpotOrder, iso: bool = False) -> dict[str, Any]:
        return order.to_json(self.fee_rate * 100, iso)

    # ---- create --------------------------------------------------------------------------------

    def create(self, acct: Account, body: dict[str, Any]) -> SpotOrder:
        ex = self.ex
        symbol = body.get("market")
        market = ex.spot_markets.get(symbol) if isinstance(symbol, str) else None
        if market is None:
            raise SimError(422, "Currency pair is not valid")
        side, order_type, qty, client_id = req_order(body, acct.by_client_id)
        if qty != market.round_quantity(qty):
            raise SimError(400, f"Quantity should be divisible by {market.step}")
        if qty < market.effective_min_quantity:
            raise SimError(400, f"Quantity too low: minimum is {market.effective_min_quantity}")
        if qty > market.max_quantity:
            raise SimError(422, f"Quantity too high: maximum is {market.max_quantity}")
        now = ex.now()
        current = ex.price(market)
        limit = None
        if order_type == "limit_order":
            limit = req_decimal(body, "price_per_unit")
            self._check_price(market, limit)
        reference = limit if limit is not None else current
        if qty * reference < market.min_notional:
            raise SimError(400, f"Minimum order value should be {market.min_notional} {market.base}")
        marketable = limit is None or (limit >= current if side == "buy" else limit <= current)
        if marketable:
            price = self._taker_price(market, side, current, limit)
            self._check_funds(acct, market, side, qty, price)
            order = SpotOrder(acct, market, side, order_type, limit or price, qty, client_id, now, ZERO)
            self._register(acct, order)
            self._fill(order, qty, price, now)
            return order
        if limit is None:  # not marketable implies a limit order
            raise AssertionError("a resting spot order needs a limit price")
        if len(acct.open_by_market.get(market.symbol, ())) >= ex.config.max_open_orders:
            raise SimError(422, f"Open orders limit reached: at most {ex.config.max_open_orders} per market")
        lock_rate = limit * (1 + self.fee_rate) if side == "buy" else Decimal(1)
        self._check_funds(acct, market, side, qty, limit)
        order = SpotOrder(acct, market, side, order_type, limit, qty, client_id, now, lock_rate)
        self._register(acct, order)
        currency = market.base if side == "buy" else market.target
        acct.lock(currency, qty * lock_rate, "order_lock", now, order.id)
        acct.open_by_market.setdefault(market.symbol, {})[order.id] = order
        self.resting.setdefault(market.symbol, {})[order.id] = order
        return order

    @staticmethod
    def _check_price(market: Market, price: Decimal) -> None:
        if price != market.round_price(price):
            raise SimError(400, f"Price should be divisible by {market.tick}")
        if market.min_price is not None and price < market.min_price:
            raise SimError(422, f"Price is below the minimum {market.min_price}")
        if market.max_price is not None and price > market.max_price:
            raise SimError(422, f"Price is above the maximum {market.max_price}")

    def _taker_price(self, market: Market, side: str, current: Decimal, limit: Decimal | None) -> Decimal:
        slip = self.ex.config.slippage
        price = market.round_price(current * (1 + slip if side == "buy" else 1 - slip))
        if limit is not None:
            price = min(price, limit) if side == "buy" else max(price, limit)
        return price

    def _check_funds(self, acct: Account, market: Market, side: str, qty: Decimal, price: Decimal) -> None:
        if side == "buy":
            need, currency = qty * price * (1 + self.fee_rate), market.base
        else:
            need, currency = qty, market.target
        if acct.free(currency) < need:
            raise SimError(422, "Insufficient funds")

    @staticmethod
    def _register(acct: Account, order: SpotOrder) -> None:
        acct.orders[order.id] = order
        if order.client_order_id is not None:
            acct.by_client_id[order.client_order_id] = order

    # ---- fills ---------------------------------------------------------------------------------

    def _fill(self, order: SpotOrder, qty: Decimal, price: Decimal, now: int) -> None:
        acct, market = order.account, order.market
        notional = qty * price
        fee = notional * self.fee_rate
        ref = order.id
        if order.side == "buy":
            if order.lock_rate:
                acct.unlock(market.base, qty * order.lock_rate, "order_unlock", now, ref)
            acct.change(market.base, -notional, "trade", now, ref)
            acct.change(market.base, -fee, "fee", now, ref)
            acct.change(market.target, qty, "trade", now, ref)
        else:
            if order.lock_rate:
                acct.unlock(market.target, qty, "order_unlock", now, ref)
            acct.change(market.target, -qty, "trade", now, ref)
            acct.change(market.base, notional, "trade", now, ref)
            acct.change(market.base, -fee, "fee", now, ref)
        order.remaining -= qty
        order.filled_notional += notional
        order.avg_price = order.filled_notional / (order.total - order.remaining)
        order.fee_amount += fee
        order.updated_at = now
        order.status = "filled" if order.remaining == 0 else "partially_filled"
        acct.fills.append(
            {
                "id": len(acct.fills) + 1,
                "order_id": order.id,
                "side": order.side,
                "fee_amount": format(fee, "f"),
                "ecode": market.pair.split("-", 1)[0],
                "quantity": format(qty, "f"),
                "price": format(price, "f"),
                "symbol": market.symbol,
                "timestamp": now,
            }
        )
        if order.status == "filled":
            self._close(order)

    def _close(self, order: SpotOrder) -> None:
        book = self.resting.get(order.market.symbol)
        if book:
            book.pop(order.id, None)
        mine = order.account.open_by_market.get(order.market.symbol)
        if mine:
            mine.pop(order.id, None)

    def has_work(self, symbol: str) -> bool:
        return bool(self.resting.get(symbol))

    def on_candle(self, symbol: str, o: float, h: float, low: float, v: float, close_ms: int) -> None:
        book = self.resting.get(symbol)
        if not book:
            return
        hi_d, lo_d, op_d = to_decimal(h), to_decimal(low), to_decimal(o)
        cap_fraction = self.ex.config.liquidity_fraction
        for order in list(book.values()):
            if order.side == "buy":
                if lo_d > order.price:
                    continue
                price = min(order.price, op_d)
            else:
                if hi_d < order.price:
                    continue
                price = max(order.price, op_d)
            qty = order.remaining
            if cap_fraction is not None:
                qty = min(qty, order.market.round_quantity(to_decimal(v) * cap_fraction))
                if qty <= 0:
                    continue
            self._fill(order, qty, order.market.round_price(price), close_ms)

    # ---- lookups, cancel, edit ------------------------------------------------------------------------

    def find(self, acct: Account, body: dict[str, Any]) -> SpotOrder:
        if body.get("id"):
            order = acct.orders.get(str(body["id"]))
        elif body.get("client_order_id"):
            order = acct.by_client_id.get(str(body["client_order_id"]))
        else:
            raise SimError(422, "Invalid Request: id or client_order_id is required")
        if order is None:
            raise SimError(404, "Order not found")
        return order

    def cancel(self, order: SpotOrder) -> None:
        if order.status not in OPEN:
            raise SimError(422, "This order cannot be cancelled")
        now = self.ex.now()
        currency = order.market.base if order.side == "buy" else order.market.target
        order.account.unlock(currency, order.remaining * order.lock_rate, "order_unlock", now, order.id)
        order.status = "cancelled" if order.remaining == order.total else "partially_cancelled"
        order.updated_at = now
        self._close(order)

    def edit_price(self, order: SpotOrder, price: Decimal) -> None:
        if order.status not in OPEN:
            raise SimError(422, "This order cannot be edited")
        market, acct = order.market, order.account
        self._check_price(market, price)
        now = self.ex.now()
        if order.side == "buy":
            new_rate = price * (1 + self.fee_rate)
            old_lock, new_lock = order.remaining * order.lock_rate, order.remaining * new_rate
            if acct.free(market.base) + old_lock < new_lock:
                raise SimError(422, "Insufficient funds")
            acct.unlock(market.base, old_lock, "order_unlock", now, order.id)
            acct.lock(market.base, new_lock, "order_lock", now, order.id)
            order.lock_rate = new_rate
        order.price = price
        order.updated_at = now
        current = self.ex.price(market)
        if (price >= current) if order.side == "buy" else (price <= current):
            self._fill(order, order.remaining, self._taker_price(market, order.side, current, price), now)
