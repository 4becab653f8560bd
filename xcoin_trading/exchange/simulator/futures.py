"""Futures (USDT-margined perpetuals): leverage, isolated margin, signed positions, attached and
position-level TP/SL triggered on the candle path, exit, liquidation.

Simulator choices (real behaviour undocumented or unobservable here):
- Orders match synchronously, so the create reply already shows `filled`/`open` (the real
  exchange answers `initial` and fills moments later). `client_order_id` is accepted and
  echoed (UNCERTAIN on the real futures API) so callers can find an order after a lost reply.
- Leverage defaults to 1 and cannot change while the pair has a position or open orders. An order's
  `leverage`, when given, must equal the position leverage (documented message).
- Margin = quantity × price / leverage, locked from the USDT wallet; fee = `futures_fee_rate` of
  the notional on every fill; realised P&L is credited/debited to the free USDT balance.
- Attached `take_profit_price`/`stop_loss_price` become position-level triggers when the entry
  fills; they close the whole position. Triggers are checked from the candle after the fill.
  A trigger fills at its price, or at the candle's open when the candle opens beyond it (gap);
  when one candle touches both, the stop loss fills (`stop_loss_first`).
- Liquidation (isolated): at avg × (1 ∓ 1/leverage ± maintenance rate); the position is closed
  there (or at the open on a gap through it) and the whole locked margin is lost — no more.
- Fill prices land on the futures tick (B-BTC_USDT: 0.1): a replayed spot close such as 42298.61
  fills at 42298.6 (half-even) — the one place futures fills differ from a backtest on spot closes.
- create_tpsl refuses a leg that already exists ("TP already exists" / "SL already exists");
  cancel that trigger order first to move it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.simulator.accounts import ZERO, Account, SimError
from xcoin_trading.exchange.simulator.futures_models import MARGIN, FuturesOrder, Position
from xcoin_trading.exchange.simulator.venue import Venue
from xcoin_trading.exchange.simulator.wire import SUCCESS, req_decimal, req_order, to_decimal


class FuturesDesk:
    def __init__(self, exchange: Venue):
        self.ex = exchange
        self.resting: dict[str, dict[str, FuturesOrder]] = {}  # pair -> id -> resting limit order
        self.watched: dict[str, dict[str, Position]] = {}  # pair -> position id -> open position

    @property
    def fee_rate(self) -> Decimal:
        return self.ex.config.futures_fee_rate

    @property
    def mmr(self) -> Decimal:
        return self.ex.config.maintenance_margin_rate

    def json(self, order: FuturesOrder) -> dict[str, Any]:
        return order.to_json(self.fee_rate * 100)

    def market(self, pair: Any) -> Market:
        market = self.ex.futures_markets.get(pair)
        if market is None:
            raise SimError(422, "Invalid pair")
        return market

    def position(self, acct: Account, market: Market) -> Position:
        pos = acct.positions.get(market.pair)
        if pos is None:
            lev = acct.leverage.get(market.pair, Decimal(1))
            pos = acct.positions[market.pair] = Position(acct, market, lev, self.ex.clock.now())
        return pos

    def has_work(self, pair: str) -> bool:
        return bool(self.resting.get(pair) or self.watched.get(pair))

    def _slipped(self, market: Market, side: str, price: Decimal) -> Decimal:
        slip = self.ex.config.slippage
        return market.round_price(price * (1 + slip if side == "buy" else 1 - slip)) if slip else price

    # ---- leverage ----------------------------------------------------------------------------------

    def update_leverage(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        market = self.market(body.get("pair"))
        lev = req_decimal(body, "leverage")
        if lev != lev.to_integral_value() or lev < 1 or lev > (market.max_leverage or Decimal(1)):
            raise SimError(422, f"Leverage must be a whole number from 1 to {market.max_leverage}")
        pos = acct.positions.get(market.pair)
        open_orders = any(o.account is acct for o in self.resting.get(market.pair, {}).values())
        if (pos is not None and pos.active_pos != 0) or open_orders:
            raise SimError(422, "Cannot change leverage while a position or open orders exist")
        acct.leverage[market.pair] = lev
        if pos is not None:
            pos.leverage = lev
        return SUCCESS

    # ---- create ----------------------------------------------------------------------------------------

    def create(self, acct: Account, body: dict[str, Any]) -> FuturesOrder:
        spec = body.get("order")
        if not isinstance(spec, dict):
            raise SimError(422, "Invalid Request: order is required")
        market = self.market(spec.get("pair"))
        side, order_type, qty, client_id = req_order(spec, acct.futures_by_client_id)
        if qty != market.round_quantity(qty):
            raise SimError(422, f"Quantity should be divisible by {market.step}")
        if qty < market.effective_min_quantity:
            raise SimError(422, f"Quantity should be greater than {market.effective_min_quantity}")
        pos = self.position(acct, market)
        lev = req_decimal(spec, "leverage", required=False) or pos.leverage
        if lev != pos.leverage:
            raise SimError(422, "Order leverage must be equal to position leverage")
        now = self.ex.now()
        current = self.ex.price(market)
        limit = req_decimal(spec, "price") if order_type == "limit_order" else None
        if limit is not None and limit != market.round_price(limit):
            raise SimError(400, f"Price should be divisible by {market.tick}")
        reference = limit if limit is not None else current
        if qty * reference < market.min_notional:
            raise SimError(400, f"Minimum order value should be {market.min_notional} {MARGIN}")
        tp = req_decimal(spec, "take_profit_price", required=False)
        sl = req_decimal(spec, "stop_loss_price", required=False)
        for name, value in (("take_profit_price", tp), ("stop_loss_price", sl)):
            if value is not None and value != market.round_price(value):
                raise SimError(400, f"{name} should be divisible by {market.tick}")
        above, below = (
            ("take_profit_price", "stop_loss_price")
            if side == "buy"
            else ("stop_loss_price", "take_profit_price")
        )
        hi, lo = (tp, sl) if side == "buy" else (sl, tp)
        if hi is not None and hi <= reference:
            raise SimError(422, f"{above} must be above the entry price for a {side} order")
        if lo is not None and lo >= reference:
            raise SimError(422, f"{below} must be below the entry price for a {side} order")
        increase = (
            qty
            if (pos.active_pos == 0 or (pos.active_pos > 0) == (side == "buy"))
            else max(ZERO, qty - abs(pos.active_pos))
        )
        need = increase * reference / lev + qty * reference * self.fee_rate
        if acct.free(MARGIN) < need:
            raise SimError(400, "Insufficient funds")
        order = FuturesOrder(
            acct, market, side, order_type, qty, now, lev, price=limit or current, client_order_id=client_id
        )
        order.tp, order.sl = tp, sl
        acct.futures_orders[order.id] = order
        if client_id is not None:
            acct.futures_by_client_id[client_id] = order
        marketable = limit is None or (limit >= current if side == "buy" else limit <= current)
        if marketable:
            price = self._slipped(market, side, current)
            if limit is not None:
                price = min(price, limit) if side == "buy" else max(price, limit)
            self._fill(order, price, now)
        else:
            order.locked = increase * limit / lev + qty * limit * self.fee_rate
            acct.lock(MARGIN, order.locked, "order_margin_lock", now, order.id)
            self.resting.setdefault(market.pair, {})[order.id] = order
        return order

    # ---- fills and positions -----------------------------------------------------------------------

    def _fill(self, order: FuturesOrder, price: Decimal, now: int) -> None:
        acct, market = order.account, order.market
        if order.locked:
            acct.unlock(MARGIN, order.locked, "order_margin_unlock", now, order.id)
            order.locked = ZERO
        qty = order.remaining
        fee = qty * price * self.fee_rate
        acct.change(MARGIN, -fee, "fee", now, order.id)
        self._apply(acct, market, order.side, qty, price, now, order.id)
        order.remaining = ZERO
        order.avg_price = price
        order.fee_amount += fee
        order.status = "filled"
        order.updated_at = now
        pos = acct.positions[market.pair]
        if pos.active_pos != 0 and (order.tp is not None or order.sl is not None):
            self._set_triggers(pos, order.tp, order.sl, now)

    def _apply(
        self, acct: Account, market: Market, side: str, qty: Decimal, price: Decimal, now: int, ref: str
    ) -> None:
        pos = self.position(acct, market)
        signed = qty if side == "buy" else -qty
        if pos.active_pos == 0 or (pos.active_pos > 0) == (signed > 0):
            size = abs(pos.active_pos)
            pos.avg_price = (size * pos.avg_price + qty * price) / (size + qty)
            margin = qty * price / pos.leverage
            acct.lock(MARGIN, margin, "margin_lock", now, ref)
            pos.locked_margin += margin
            pos.active_pos += signed
            self.watched.setdefault(market.pair, {})[pos.id] = pos
        else:
            size = abs(pos.active_pos)
            closing = min(qty, size)
            direction = 1 if pos.active_pos > 0 else -1
            pnl = (price - pos.avg_price) * closing * direction
            released = pos.locked_margin * closing / size
            acct.unlock(MARGIN, released, "margin_release", now, ref)
            acct.change(MARGIN, pnl, "realised_pnl", now, ref)
            pos.locked_margin -= released
            pos.active_pos += signed if qty <= size else -pos.active_pos
            if pos.active_pos == 0:
                self._flat(pos, now)
            if qty > size:  # flip: the rest opens the other way
                self._apply(acct, market, side, qty - size, price, now, ref)
        pos.updated_at = now

    def _flat(self, pos: Position, now: int) -> None:
        pos.avg_price = ZERO
        if pos.locked_margin:  # rounding dust of partial closes stays exact: release the remainder
            pos.account.unlock(MARGIN, pos.locked_margin, "margin_release", now, pos.id)
            pos.locked_margin = ZERO
        for leg in (pos.tp_order, pos.sl_order):
            if leg is not None and leg.status == "untriggered":
                leg.status, leg.updated_at = "cancelled", now
                leg.cancelled, leg.remaining = leg.remaining, ZERO
        pos.tp_order = pos.sl_order = None
        watched = self.watched.get(pos.market.pair)
        if watched:
            watched.pop(pos.id, None)

    def _trigger_order(self, pos: Position, order_type: str, stop: Decimal, now: int) -> FuturesOrder:
        side = "sell" if pos.active_pos > 0 else "buy"
        order = FuturesOrder(pos.account, pos.market, side, order_type, abs(pos.active_pos), now, pos.leverage, stop_price=stop, stage="tpsl_exit", status="untriggered")  # fmt: skip
        order.group_id = pos.id
        pos.account.futures_orders[order.id] = order
        return order

    def _set_triggers(self, pos: Position, tp: Decimal | None, sl: Decimal | None, now: int) -> None:
        if tp is not None:
            self._cancel_leg(pos.tp_order, now)
            pos.tp_order = self._trigger_order(pos, "take_profit_market", tp, now)
        if sl is not None:
            self._cancel_leg(pos.sl_order, now)
            pos.sl_order = self._trigger_order(pos, "stop_market", sl, now)

    @staticmethod
    def _cancel_leg(order: FuturesOrder | None, now: int) -> None:
        if order is not None and order.status == "untriggered":
            order.status, order.updated_at = "cancelled", now
            order.cancelled, order.remaining = order.remaining, ZERO

    def _close(self, pos: Position, order: FuturesOrder, price: Decimal, now: int) -> None:
        """Close the whole position with `order` (a trigger or an exit) at `price`."""
        order.total = order.remaining = abs(pos.active_pos)
        order.status = "open"
        self._fill(order, pos.market.round_price(price), now)

    def _liquidate(self, pos: Position, price: Decimal, now: int) -> None:
        acct = pos.account
        price = pos.market.round_price(price)
        order = FuturesOrder(acct, pos.market, "sell" if pos.active_pos > 0 else "buy", "market_order", abs(pos.active_pos), now, pos.leverage, price=price, stage="liquidate", status="filled")  # fmt: skip
        order.avg_price, order.remaining, order.group_id = price, ZERO, pos.id
        acct.futures_orders[order.id] = order
        acct.spend_locked(MARGIN, pos.locked_margin, "liquidation", now, order.id)
        pos.locked_margin = ZERO
        pos.active_pos = ZERO
        pos.updated_at = now
        self._flat(pos, now)

    # ---- the candle path ----------------------------------------------------------------------------

    def on_candle(self, pair: str, o: float, h: float, low: float, c: float, close_ms: int) -> None:
        op, hi, lo = to_decimal(o), to_decimal(h), to_decimal(low)
        watched = self.watched.get(pair)
        if watched:
            for pos in list(watched.values()):
                self._check_position(pos, op, hi, lo, close_ms)
        book = self.resting.get(pair)
        if book:
            for order in list(book.values()):
                if order.side == "buy" and lo <= order.price:
                    price = min(order.price, op)
                elif order.side == "sell" and hi >= order.price:
                    price = max(order.price, op)
                else:
                    continue
                del book[order.id]
                self._fill(order, order.market.round_price(price), close_ms)

    def _check_position(self, pos: Position, op: Decimal, hi: Decimal, lo: Decimal, now: int) -> None:
        long = pos.active_pos > 0
        liq = pos.liquidation_price(self.mmr)
        if (long and op <= liq) or (not long and op >= liq):
            self._liquidate(pos, op, now)
            return
        sl = pos.sl_order.stop_price if pos.sl_order else None
        tp = pos.tp_order.stop_price if pos.tp_order else None
        sl_hit = sl is not None and (lo <= sl if long else hi >= sl)
        tp_hit = tp is not None and (hi >= tp if long else lo <= tp)
        if sl_hit and (not tp_hit or self.ex.config.stop_loss_first):
            price = min(sl, op) if long else max(sl, op)
            if (long and price <= liq) or (not long and price >= liq):
                self._liquidate(pos, liq, now)
                return
            self._cancel_leg(pos.tp_order, now)
            self._close(pos, pos.sl_order, self._slipped(pos.market, pos.sl_order.side, price), now)
        elif tp_hit:
            price = max(tp, op) if long else min(tp, op)
            self._cancel_leg(pos.sl_order, now)
            self._close(pos, pos.tp_order, price, now)
        elif (long and lo <= liq) or (not long and hi >= liq):
            self._liquidate(pos, liq, now)

    # ---- other endpoints -------------------------------------------------------------------------------

    def find_position(self, acct: Account, position_id: Any) -> Position:
        for pos in acct.positions.values():
            if pos.id == position_id:
                return pos
        raise SimError(404, "Position not found")

    def exit(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        pos = self.find_position(acct, body.get("id"))
        if pos.active_pos == 0:
            raise SimError(422, "No open position to exit")
        now = self.ex.now()
        self._cancel_leg(pos.tp_order, now)
        self._cancel_leg(pos.sl_order, now)
        side = "sell" if pos.active_pos > 0 else "buy"
        order = FuturesOrder(
            acct, pos.market, side, "market_order", abs(pos.active_pos), now, pos.leverage, stage="exit"
        )
        order.group_id = pos.id
        acct.futures_orders[order.id] = order
        price = self._slipped(pos.market, side, self.ex.price(pos.market))
        order.price = price
        self._fill(order, price, now)
        return {**SUCCESS, "data": {"group_id": pos.id}}

    def create_tpsl(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        pos = self.find_position(acct, body.get("id"))
        if pos.active_pos == 0:
            raise SimError(422, "No open position for take profit / stop loss")
        now = self.ex.now()
        current = self.ex.price(pos.market)
        long = pos.active_pos > 0
        out: dict[str, Any] = {}
        for leg, label, attr, order_type in (
            ("take_profit", "TP", "tp_order", "take_profit_market"),
            ("stop_loss", "SL", "sl_order", "stop_market"),
        ):
            spec = body.get(leg)
            if not isinstance(spec, dict):
                continue
            existing = getattr(pos, attr)
            if existing is not None and existing.status == "untriggered":
                out[leg] = {"success": False, "error": f"{label} already exists"}
                continue
            try:
                stop = req_decimal(spec, "stop_price")
            except SimError as exc:
                out[leg] = {"success": False, "error": exc.message}
                continue
            above = (leg == "take_profit") == long
            if stop != pos.market.round_price(stop) or (stop <= current if above else stop >= current):
                where = "above" if above else "below"
                out[leg] = {
                    "success": False,
                    "error": f"{label} price must be {where} the last price on the tick",
                }
                continue
            order = self._trigger_order(pos, order_type, stop, now)
            setattr(pos, attr, order)
            out[leg] = self.json(order)
        return out

    def cancel(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        order = acct.futures_orders.get(str(body.get("id")))
        if order is None:
            raise SimError(404, "Order not found")
        now = self.ex.now()
        if order.status == "untriggered":
            pos = acct.positions.get(order.market.pair)
            self._cancel_leg(order, now)
            if pos is not None:
                if pos.tp_order is order:
                    pos.tp_order = None
                if pos.sl_order is order:
                    pos.sl_order = None
            return SUCCESS
        if order.status not in ("open", "partially_filled"):
            raise SimError(422, "This order cannot be cancelled")
        self.resting.get(order.market.pair, {}).pop(order.id, None)
        acct.unlock(MARGIN, order.locked, "order_margin_unlock", now, order.id)
        order.locked = ZERO
        order.cancelled, order.remaining = order.remaining, ZERO
        order.status, order.updated_at = "cancelled", now
        return SUCCESS
