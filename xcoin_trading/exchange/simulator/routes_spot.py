"""The simulator's private spot routes (CoinDCX `/exchange/v1/...`): the JSON around the spot desk.

The desk (`spot.py`) matches and books; this module reads requests and shapes answers.
"""

from __future__ import annotations

from typing import Any

from xcoin_trading.exchange.simulator.accounts import Account, SimError
from xcoin_trading.exchange.simulator.engine import Exchange
from xcoin_trading.exchange.simulator.wire import SUCCESS, req_decimal

BASE = "/exchange/v1"
# Order endpoints whose rate-limit bucket is their own name.
LIMITED_ORDER_ENDPOINTS = ("create", "create_multiple", "status", "status_multiple", "active_orders", "cancel",
                           "cancel_all", "cancel_by_ids", "edit")  # fmt: skip


class SpotRoutes:
    def __init__(self, exchange: Exchange):
        self.ex = exchange

    def routes(self) -> dict[str, tuple[str, str, Any]]:
        routes: dict[str, tuple[str, str, Any]] = {
            f"{BASE}/users/balances": ("private", "", lambda a, b: a.balances_json()),
            f"{BASE}/users/info": ("private", "", self.user_info),
            f"{BASE}/orders/active_orders_count": ("private", "active_orders", self.active_orders_count),
            f"{BASE}/orders/trade_history": ("private", "", self.trade_history),
        }
        for name in LIMITED_ORDER_ENDPOINTS:
            routes[f"{BASE}/orders/{name}"] = ("private", name, getattr(self, name))
        return routes

    def user_info(self, acct: Account, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "coindcx_id": f"sim-{acct.number}",
                "first_name": "Sim",
                "last_name": f"User {acct.number}",
                "mobile_number": "",
                "email": f"user{acct.number}@simulator.local",
            }
        ]

    def create(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        return {"orders": [self.ex.spot.json(self.ex.spot.create(acct, body))]}

    def create_multiple(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("orders")
        if not isinstance(items, list) or not items:
            raise SimError(422, "Invalid Request: orders must be a non-empty list")
        out: list[dict[str, Any]] = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise SimError(422, "Invalid Request: each order must be an object")
                out.append(self.ex.spot.json(self.ex.spot.create(acct, item)))
            except SimError as exc:
                out.append({"error_message": exc.message})
        return {"orders": out}

    def status(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        return self.ex.spot.json(self.ex.spot.find(acct, body))

    def _many(self, acct: Account, body: dict[str, Any]) -> list[Any]:
        if isinstance(body.get("ids"), list):
            index, keys = acct.orders, body["ids"]
        elif isinstance(body.get("client_order_ids"), list):
            index, keys = acct.by_client_id, body["client_order_ids"]
        else:
            raise SimError(422, "Invalid Request: ids or client_order_ids (a list) is required")
        return [o for k in keys if (o := index.get(str(k))) is not None]

    def status_multiple(self, acct: Account, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.ex.spot.json(o) for o in self._many(acct, body)]

    def _open_orders(self, acct: Account, body: dict[str, Any]) -> list[Any]:
        market = body.get("market")
        if market not in self.ex.spot_markets:
            raise SimError(422, "Currency pair is not valid")
        side = body.get("side")
        self.ex.now()
        return [o for o in acct.open_by_market.get(market, {}).values() if side is None or o.side == side]

    def active_orders(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        orders = [self.ex.spot.json(o, iso=True) for o in self._open_orders(acct, body)]
        return {"orders": orders, "details": False, "cp": False, "cp_hash": {}}

    def active_orders_count(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        return {"count": len(self._open_orders(acct, body)), "status": 200}

    def trade_history(self, acct: Account, body: dict[str, Any]) -> list[dict[str, Any]]:
        self.ex.now()
        limit = int(body.get("limit") or 500)
        if not 1 <= limit <= 5000:
            raise SimError(422, "Invalid Request: limit must be in 1..5000")
        rows = acct.fills
        symbol, from_id = body.get("symbol"), body.get("from_id")
        t0, t1 = body.get("from_timestamp"), body.get("to_timestamp")
        rows = [
            r
            for r in rows
            if (symbol is None or r["symbol"] == symbol)
            and (from_id is None or r["id"] >= int(from_id))
            and (t0 is None or r["timestamp"] >= t0)
            and (t1 is None or r["timestamp"] <= t1)
        ]
        if body.get("sort") == "desc":
            rows = rows[::-1]
        return rows[:limit]

    def cancel(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        self.ex.spot.cancel(self.ex.spot.find(acct, body))
        return SUCCESS

    def cancel_all(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        for order in list(self._open_orders(acct, body)):
            self.ex.spot.cancel(order)
        return SUCCESS

    def cancel_by_ids(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        for order in self._many(acct, body):
            if order.status in ("open", "partially_filled"):
                self.ex.spot.cancel(order)
        return SUCCESS

    def edit(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        order = self.ex.spot.find(acct, body)
        self.ex.spot.edit_price(order, req_decimal(body, "price_per_unit"))
        return self.ex.spot.json(order)
