"""The simulator's futures routes (CoinDCX `/exchange/v1/derivatives/futures/...`) onto the desk."""

from __future__ import annotations

from typing import Any

from xcoin_trading.exchange.simulator.accounts import Account
from xcoin_trading.exchange.simulator.futures import FuturesDesk
from xcoin_trading.exchange.simulator.futures_models import MARGIN
from xcoin_trading.exchange.simulator.wire import jnum

BASE = "/exchange/v1/derivatives/futures"


def futures_routes(desk: FuturesDesk) -> dict[str, tuple[str, str, Any]]:

    def instrument(query: Any) -> dict[str, Any]:
        m = desk.market(query.get("pair"))
        fee = float(desk.fee_rate * 100)
        return {
            "instrument": {
                "pair": m.pair, "status": "active", "margin_currency_short_name": MARGIN,
                "price_increment": jnum(m.tick), "quantity_increment": jnum(m.step),
                "min_quantity": jnum(m.min_quantity), "max_quantity": jnum(m.max_quantity),
                "min_notional": jnum(m.min_notional), "max_market_order_quantity": jnum(m.max_quantity),
                "maker_fee": fee, "taker_fee": fee,
                "max_leverage_long": jnum(m.max_leverage), "max_leverage_short": jnum(m.max_leverage),
                "order_types": ["market_order", "limit_order"], "exit_only": False,
            }
        }  # fmt: skip

    return {
        f"{BASE}/data/active_instruments": ("public", "", lambda q: list(desk.ex.futures_markets)),
        f"{BASE}/data/instrument": ("public", "", instrument),
        f"{BASE}/orders/create": ("private", "create", lambda a, b: [desk.json(desk.create(a, b))]),
        f"{BASE}/orders": ("private", "", lambda a, b: list_orders(desk, a, b)),
        f"{BASE}/orders/cancel": ("private", "cancel", desk.cancel),
        f"{BASE}/positions": ("private", "", lambda a, b: list_positions(desk, a, b)),
        f"{BASE}/positions/update_leverage": ("private", "", desk.update_leverage),
        f"{BASE}/positions/create_tpsl": ("private", "", desk.create_tpsl),
        f"{BASE}/positions/exit": ("private", "", desk.exit),
    }


def _page(body: dict[str, Any]) -> slice:
    page, size = max(int(body.get("page") or 1), 1), min(max(int(body.get("size") or 100), 1), 1000)
    return slice((page - 1) * size, page * size)


def _csv(body: dict[str, Any], name: str) -> set[str]:
    return {p.strip() for p in str(body.get(name) or "").split(",") if p.strip()}


def list_orders(desk: FuturesDesk, acct: Account, body: dict[str, Any]) -> list[dict[str, Any]]:
    desk.ex.now()
    statuses = _csv(body, "status")
    side = body.get("side")
    rows = [
        o
        for o in reversed(acct.futures_orders.values())
        if (not statuses or o.status in statuses) and (side is None or o.side == side)
    ]
    return [desk.json(o) for o in rows[_page(body)]]


def list_positions(desk: FuturesDesk, acct: Account, body: dict[str, Any]) -> list[dict[str, Any]]:
    desk.ex.now()
    pairs, ids = _csv(body, "pairs"), _csv(body, "position_ids")
    rows = [
        p.to_json(desk.mmr, desk.ex.price(p.market))
        for p in acct.positions.values()
        if (not pairs or p.market.pair in pairs) and (not ids or p.id in ids)
    ]
    return rows[_page(body)]
