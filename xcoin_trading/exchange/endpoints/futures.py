"""USDT-margined futures endpoints: leverage, orders, instruments, positions and their TP/SL."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.endpoints.requests import (
    Call,
    Plan,
    Requests,
    Sleep,
    check_new_order,
    check_positive,
    client_id,
    endpoint,
    positive,
    side_filter,
)
from xcoin_trading.exchange.errors import ExchangeError, error_from_body
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.models import Order, Position

FUTURES = "/exchange/v1/derivatives/futures"


def _page(page: int, size: int, margin_currency: str, **filters: Iterable[str] | None) -> dict[str, Any]:
    """One page of a futures list; each given filter is sent comma-joined."""
    body: dict[str, Any] = {
        "page": str(page),
        "size": str(size),
        "margin_currency_short_name": [margin_currency],
    }
    body.update({name: ",".join(values) for name, values in filters.items() if values})
    return body


class FuturesEndpoints(Requests):
    def _p_futures_set_leverage(self, pair: str, leverage: Any, margin_currency: str = "USDT") -> Plan[None]:
        body = {
            "pair": pair,
            "leverage": positive("leverage", leverage),
            "margin_currency_short_name": margin_currency,
        }
        yield Call("api", f"{FUTURES}/positions/update_leverage", body=body, retry=False)

    def _p_futures_ensure_leverage(self, pair: str, leverage: Any, attempts: int = 2) -> Plan[Decimal]:
        """Leverage set on `pair`, classified by the exchange's own answer: after any failure
        (executed? not executed? unknown) the position's leverage is read back, and only a
        confirmed "not set" is sent again. Raises when it cannot be confirmed: the entry that
        needs it must then not be sent."""
        wanted = check_positive("leverage", leverage)
        for attempt in range(attempts):
            try:
                yield from self._p_futures_set_leverage(pair, wanted)
                return wanted
            except ExchangeError:
                rows = yield from self._p_futures_positions(pairs=[pair])  # a failed read raises: unknown
                held = [p for p in rows if p.pair == pair]
                if held and held[0].leverage == wanted:
                    return wanted  # executed although the reply failed, or already so
                if attempt + 1 >= attempts:
                    raise
                yield Sleep(0.1)
        return wanted

    def _p_futures_create_order(
        self,
        pair: str,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        *,
        leverage: Any = None,
        take_profit_price: Any = None,
        stop_loss_price: Any = None,
        client_order_id: str | None = None,
        margin_currency: str = "USDT",
    ) -> Plan[Order]:
        """Open/extend (or reduce) a futures position: buy = LONG, sell = SHORT. Never resent."""
        check_new_order(side, order_type, price)
        order: dict[str, Any] = {"side": side, "pair": pair, "order_type": order_type}
        if order_type == "limit_order":
            order["price"] = positive("price", price)
        order["total_quantity"] = positive("quantity", quantity)
        for key, value in (
            ("leverage", leverage),
            ("take_profit_price", take_profit_price),
            ("stop_loss_price", stop_loss_price),
        ):
            if value is not None:
                order[key] = positive(key, value)
        if client_order_id is not None:
            order["client_order_id"] = client_id(client_order_id)
        order["margin_currency_short_name"] = margin_currency
        body = {"timestamp": None, "order": order}  # futures docs put timestamp first
        rows = yield Call("api", f"{FUTURES}/orders/create", body=body, bucket="create", retry=False)
        return Order.from_futures(rows[0])

    def _p_futures_instrument(self, pair: str, margin_currency: str = "USDT") -> Plan[Market]:
        """Futures sizing rules of one pair (tick, quantity step, minimums, leverage) as a `Market`."""
        reply = yield Call(
            "api",
            f"{FUTURES}/data/instrument",
            params={"pair": pair, "margin_currency_short_name": margin_currency},
        )
        return Market.from_instrument(reply["instrument"] | {"pair": pair}, margin_currency)

    def _p_futures_active_instruments(self, margin_currency: str = "USDT") -> Plan[list[str]]:
        """Pairs of every active futures instrument (`B-BTC_USDT`, ...)."""
        rows = yield Call(
            "api",
            f"{FUTURES}/data/active_instruments",
            params={"margin_currency_short_name[]": margin_currency},
        )
        return [r if isinstance(r, str) else r["pair"] for r in rows]

    def _p_futures_orders(
        self,
        statuses: Iterable[str] | None = None,
        side: str | None = None,
        page: int = 1,
        size: int = 100,
        margin_currency: str = "USDT",
    ) -> Plan[list[Order]]:
        body = _page(page, size, margin_currency, status=statuses)
        side_filter(body, side)
        rows = yield Call("api", f"{FUTURES}/orders", body=body)
        return [Order.from_futures(r) for r in rows]

    def _p_futures_cancel_order(self, id: str) -> Plan[None]:
        yield Call("api", f"{FUTURES}/orders/cancel", body={"id": id}, bucket="cancel", retry=False)

    def _p_futures_positions(
        self,
        pairs: Iterable[str] | None = None,
        page: int = 1,
        size: int = 100,
        margin_currency: str = "USDT",
    ) -> Plan[list[Position]]:
        rows = yield Call("api", f"{FUTURES}/positions", body=_page(page, size, margin_currency, pairs=pairs))
        return [Position.from_json(r) for r in rows]

    def _p_futures_create_tpsl(
        self, position_id: str, take_profit: Any = None, stop_loss: Any = None
    ) -> Plan[dict[str, Order | ExchangeError]]:
        """Position-level TP/SL (market orders on trigger). Returns {"take_profit": Order | ExchangeError, ...}."""
        if take_profit is None and stop_loss is None:
            raise ValidationError("take_profit", "give a take profit and/or a stop loss price")
        body: dict[str, Any] = {"id": position_id}
        if take_profit is not None:
            tp = positive("take_profit", take_profit)
            body["take_profit"] = {"stop_price": tp, "limit_price": tp, "order_type": "take_profit_market"}
        if stop_loss is not None:
            sl = positive("stop_loss", stop_loss)
            body["stop_loss"] = {"stop_price": sl, "limit_price": sl, "order_type": "stop_market"}
        reply = yield Call("api", f"{FUTURES}/positions/create_tpsl", body=body, retry=False)
        out: dict[str, Order | ExchangeError] = {}
        for leg in ("take_profit", "stop_loss"):
            row = reply.get(leg)
            if row is None:
                continue
            if row.get("success") is False or "id" not in row:
                out[leg] = error_from_body(422, {"message": row.get("error", "rejected")})
            else:
                out[leg] = Order.from_futures(row)
        return out

    def _p_futures_exit_position(self, position_id: str) -> Plan[dict[str, Any]]:
        reply = yield Call("api", f"{FUTURES}/positions/exit", body={"id": position_id}, retry=False)
        return reply.get("data") or {}

    futures_set_leverage = endpoint(_p_futures_set_leverage)
    futures_ensure_leverage = endpoint(_p_futures_ensure_leverage)
    futures_create_order = endpoint(_p_futures_create_order)
    futures_instrument = endpoint(_p_futures_instrument)
    futures_active_instruments = endpoint(_p_futures_active_instruments)
    futures_orders = endpoint(_p_futures_orders)
    futures_cancel_order = endpoint(_p_futures_cancel_order)
    futures_positions = endpoint(_p_futures_positions)
    futures_create_tpsl = endpoint(_p_futures_create_tpsl)
    futures_exit_position = endpoint(_p_futures_exit_position)
