"""Spot endpoints that need a key: balances, orders (create, status, lists, cancel, edit), fills."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.endpoints.requests import (
    Call,
    Plan,
    Requests,
    check_choice,
    check_new_order,
    client_id,
    endpoint,
    ids_body,
    one_of,
    positive,
    side_filter,
)
from xcoin_trading.exchange.errors import ExchangeError, error_from_body
from xcoin_trading.exchange.models import AccountTrade, Balance, Order


class SpotEndpoints(Requests):
    def _p_balances(self) -> Plan[list[Balance]]:
        rows = yield Call("api", "/exchange/v1/users/balances", body={})
        return [Balance.from_json(r) for r in rows]

    def _p_balance(self, currency: str) -> Plan[Balance]:
        """One currency's balance (zero when the account has never held it)."""
        for b in (yield from self._p_balances()):
            if b.currency == currency:
                return b
        return Balance(currency, Decimal(0), Decimal(0))

    def _p_user_info(self) -> Plan[dict[str, Any]]:
        rows = yield Call("api", "/exchange/v1/users/info", body={})
        return cast(dict[str, Any], rows[0] if isinstance(rows, list) and rows else rows)

    @staticmethod
    def _order_body(
        market: str, side: str, order_type: str, quantity: Any, price: Any, client_order_id: str | None
    ) -> dict[str, Any]:
        check_new_order(side, order_type, price)
        body: dict[str, Any] = {"side": side, "order_type": order_type, "market": market}
        if order_type == "limit_order":
            body["price_per_unit"] = positive("price", price)
        body["total_quantity"] = positive("quantity", quantity)
        if client_order_id is not None:
            body["client_order_id"] = client_id(client_order_id)
        return body

    def _p_create_order(
        self,
        market: str,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        client_order_id: str | None = None,
    ) -> Plan[Order]:
        """Place one spot order. Never resent on its own: see `create_order_idempotent`."""
        body = self._order_body(market, side, order_type, quantity, price, client_order_id)
        reply = yield Call("api", "/exchange/v1/orders/create", body=body, bucket="create", retry=False)
        return Order.from_spot(reply["orders"][0])

    def _p_create_orders(self, orders: list[dict[str, Any]]) -> Plan[list[Order | ExchangeError]]:
        """Several spot orders in one request; failures come back inline as ExchangeError values.

        Each dict takes the keyword arguments of `create_order` plus an optional `ecode`.
        """
        items = []
        for o in orders:
            item = self._order_body(
                o["market"],
                o["side"],
                o["order_type"],
                o["quantity"],
                o.get("price"),
                o.get("client_order_id"),
            )
            item["ecode"] = o.get("ecode", "I")
            items.append(item)
        reply = yield Call(
            "api",
            "/exchange/v1/orders/create_multiple",
            body={"orders": items},
            bucket="create_multiple",
            retry=False,
        )
        out: list[Order | ExchangeError] = []
        for row in reply.get("orders", []):
            if "error_message" in row or "id" not in row:
                out.append(error_from_body(422, {"message": row.get("error_message", "order rejected")}))
            else:
                out.append(Order.from_spot(row))
        return out

    def _p_order_status(self, id: str | None = None, client_order_id: str | None = None) -> Plan[Order]:
        row = yield Call(
            "api", "/exchange/v1/orders/status", body=one_of(id, client_order_id), bucket="status"
        )
        return Order.from_spot(row)

    def _p_order_status_multiple(
        self, ids: list[str] | None = None, client_order_ids: list[str] | None = None
    ) -> Plan[list[Order]]:
        body = ids_body(ids, client_order_ids)
        rows = yield Call("api", "/exchange/v1/orders/status_multiple", body=body, bucket="status_multiple")
        return [Order.from_spot(r) for r in rows]

    def _p_active_orders(self, market: str, side: str | None = None) -> Plan[list[Order]]:
        body = side_filter({"market": market}, side)
        reply = yield Call("api", "/exchange/v1/orders/active_orders", body=body, bucket="active_orders")
        rows = reply.get("orders", []) if isinstance(reply, dict) else reply  # 2024 shape or documented list
        return [Order.from_spot(r) for r in rows]

    def _p_active_orders_count(self, market: str, side: str | None = None) -> Plan[int]:
        body = side_filter({"market": market}, side)
        reply = yield Call(
            "api", "/exchange/v1/orders/active_orders_count", body=body, bucket="active_orders"
        )
        return int(reply["count"])

    def _p_trade_history(
        self,
        symbol: str | None = None,
        *,
        limit: int = 500,
        from_id: int | None = None,
        sort: str = "asc",
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> Plan[list[AccountTrade]]:
        check_choice("sort", sort, ("asc", "desc"))
        if not 1 <= limit <= 5000:
            raise ValidationError("limit", f"must be in 1..5000, got {limit}")
        body: dict[str, Any] = {"limit": limit, "sort": sort}
        for key, value in (
            ("symbol", symbol),
            ("from_id", from_id),
            ("from_timestamp", from_ms),
            ("to_timestamp", to_ms),
        ):
            if value is not None:
                body[key] = value
        rows = yield Call("api", "/exchange/v1/orders/trade_history", body=body)
        return [AccountTrade.from_json(r) for r in rows]

    def _p_cancel_order(self, id: str | None = None, client_order_id: str | None = None) -> Plan[None]:
        yield Call(
            "api",
            "/exchange/v1/orders/cancel",
            body=one_of(id, client_order_id),
            bucket="cancel",
            retry=False,
        )

    def _p_cancel_all(self, market: str, side: str | None = None) -> Plan[None]:
        body = side_filter({"market": market}, side)
        yield Call("api", "/exchange/v1/orders/cancel_all", body=body, bucket="cancel_all", retry=False)

    def _p_cancel_by_ids(
        self, ids: list[str] | None = None, client_order_ids: list[str] | None = None
    ) -> Plan[None]:
        body = ids_body(ids, client_order_ids)
        yield Call("api", "/exchange/v1/orders/cancel_by_ids", body=body, bucket="cancel_by_ids", retry=False)

    def _p_edit_price(
        self, price: Any, id: str | None = None, client_order_id: str | None = None
    ) -> Plan[Order]:
        body: dict[str, Any] = one_of(id, client_order_id)
        body["price_per_unit"] = positive("price", price)
        row = yield Call("api", "/exchange/v1/orders/edit", body=body, bucket="edit", retry=False)
        return Order.from_spot(row)

    balances = endpoint(_p_balances)
    balance = endpoint(_p_balance)
    user_info = endpoint(_p_user_info)
    create_order = endpoint(_p_create_order)
    create_orders = endpoint(_p_create_orders)
    order_status = endpoint(_p_order_status)
    order_status_multiple = endpoint(_p_order_status_multiple)
    active_orders = endpoint(_p_active_orders)
    active_orders_count = endpoint(_p_active_orders_count)
    trade_history = endpoint(_p_trade_history)
    cancel_order = endpoint(_p_cancel_order)
    cancel_all = endpoint(_p_cancel_all)
    cancel_by_ids = endpoint(_p_cancel_by_ids)
    edit_price = endpoint(_p_edit_price)
