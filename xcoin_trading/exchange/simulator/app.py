"""The simulator's ASGI app: CoinDCX paths, JSON shapes, error bodies, signature checks, rate
limits and fault injection, plus the admin API under `/_sim/` (no auth: a local test tool).

One catch-all Starlette route dispatches through a dict (O(1) per request). Error bodies are
`{"code": N, "message": "...", "status": "error"}` with the HTTP status equal to `code`.

Simulator choices (undocumented on the real exchange):
- Auth failures (unknown key, bad signature, timestamp missing or outside ±`recv_window_ms` of the
  wall clock) answer 401 with a message saying which.
- 429 bodies are `{"code":429,"message":"Too Many Requests","status":"error"}` with `Retry-After`
  (seconds). Limits count per API key: 16/s and 960/min overall plus the per-endpoint table.
  Public endpoints are not rate limited.
- Unknown paths answer 404 `not_found`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from xcoin_trading.exchange.ratelimit import RateLimiter
from xcoin_trading.exchange.simulator.accounts import Account, SimError
from xcoin_trading.exchange.simulator.engine import Exchange
from xcoin_trading.exchange.simulator.faults import FaultRule, Faults
from xcoin_trading.exchange.simulator.futures import futures_routes
from xcoin_trading.exchange.simulator.wire import req_decimal
from xcoin_trading.timeframes import DAY_MS, EXCHANGE_INTERVALS

Handler = Callable[..., Any]
SUCCESS = {"message": "success", "status": 200, "code": 200}
_JSON = "application/json"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps({"code": status, "message": message, "status": "error"}), status, headers, _JSON)


class SimulatorApp:
    """Wraps an `Exchange`; `.asgi` is what uvicorn serves."""

    def __init__(self, exchange: Exchange, faults: Faults | None = None):
        self.ex = exchange
        self.faults = faults or Faults()
        self.limiter = self._make_limiter()
        # path -> (kind, rate-limit bucket, handler); kind: public | private | admin
        self.routes: dict[str, tuple[str, str, Handler]] = {}
        self._add_public()
        self._add_spot()
        self._add_admin()
        self.routes.update(futures_routes(exchange.futures))
        self._ticker_cache: tuple[int, bytes] | None = None
        self._details_cache: bytes | None = None
        self.asgi = Starlette(
            routes=[Route("/{path:path}", self.dispatch, methods=["GET", "POST", "DELETE"])]
        )

    def _make_limiter(self) -> RateLimiter:
        cfg = self.ex.config
        return RateLimiter(enabled=cfg.rate_limits, scale=cfg.rate_limit_scale)

    # ---- dispatch --------------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        route = self.routes.get(path)
        if route is None:
            return error_response(404, "not_found")
        kind, bucket, handler = route
        if kind == "admin":
            return await self._admin(request, handler)
        decision = self.faults.decide(path) if self.faults.rules else None
        if decision is not None:
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            rule = decision.rule
            if decision.action == "429":
                return error_response(
                    429, "Too Many Requests", {"Retry-After": _retry_after(rule.retry_after_s)}
                )
            if decision.action == "5xx":
                return error_response(rule.error_5xx_status, "Internal Server Error")
            if decision.action == "timeout":
                await asyncio.sleep(rule.timeout_s)
                return error_response(504, "Gateway Timeout")
        try:
            if kind == "public":
                result = handler(request.query_params)
                if (
                    decision is not None
                    and decision.action == "duplicate_candles"
                    and isinstance(result, list)
                    and result
                ):
                    first = result[0]
                    result = [
                        *result,
                        {**first, "close": first["close"] * 1.001, "volume": first["volume"] + 1},
                    ]
            else:
                raw = await request.body()
                acct, body = self._authenticate(request, raw)
                if self.limiter.enabled:
                    wait = self.limiter.check(acct.api_key, bucket)
                    if wait:
                        return error_response(429, "Too Many Requests", {"Retry-After": _retry_after(wait)})
                result = handler(acct, body)
        except SimError as exc:
            return error_response(exc.status, exc.message)
        if decision is not None and decision.action == "lost_reply":
            if decision.rule.lost_reply_delay_s:
                await asyncio.sleep(decision.rule.lost_reply_delay_s)
            return error_response(504, "Gateway Timeout")
        if isinstance(result, Response):
            return result
        return Response(result if isinstance(result, bytes) else _dumps(result), 200, media_type=_JSON)

    def _authenticate(self, request: Request, raw: bytes) -> tuple[Account, dict[str, Any]]:
        headers = request.headers
        key = headers.get("x-auth-apikey")
        signature = headers.get("x-auth-signature")
        if not key or not signature:
            raise SimError(
                401, "Invalid credentials: X-AUTH-APIKEY and X-AUTH-SIGNATURE headers are required"
            )
        acct = self.ex.accounts.get(key)
        if acct is None or not acct.verify(raw, signature):
            raise SimError(401, "Invalid credentials")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise SimError(400, "Invalid Request: body is not JSON") from None
        if not isinstance(body, dict):
            raise SimError(400, "Invalid Request: body must be a JSON object")
        stamp = body.get("timestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool):
            raise SimError(401, "Invalid credentials: timestamp (ms) is required in the body")
        if abs(time.time() * 1000 - stamp) > self.ex.config.recv_window_ms:
            raise SimError(401, "Invalid credentials: timestamp is outside the allowed window")
        return acct, body

    async def _admin(self, request: Request, handler: Handler) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
            result = handler(request, body)
        except SimError as exc:
            return error_response(exc.status, exc.message)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(422, f"Invalid Request: {exc}")
        return Response(_dumps(result), 200, media_type=_JSON)

    # ---- public ----------------------------------------------------------------------------------

    def _add_public(self) -> None:
        r = self.routes
        r["/exchange/ticker"] = ("public", "", self.ticker)
        r["/exchange/v1/markets"] = ("public", "", lambda q: list(self.ex.spot_markets))
        r["/exchange/v1/markets_details"] = ("public", "", self.markets_details)
        r["/market_data/candles"] = ("public", "", self.candles)
        r["/market_data/orderbook"] = ("public", "", self.order_book)
        r["/market_data/trade_history"] = ("public", "", self.public_trades)

    def markets_details(self, query: Any) -> bytes:
        """The bundled CoinDCX rows of the markets it trades, plus the listed ones it does not
        (inactive, INR-quoted): a client sees the list and statuses a real account sees."""
        if self._details_cache is None:
            from xcoin_trading.exchange.markets import BUNDLED, SPOT_MARKETS

            rows = [
                r
                for r in BUNDLED["spot"]
                if r["symbol"] in self.ex.spot_markets or r["symbol"] not in SPOT_MARKETS
            ]
            self._details_cache = _dumps(rows)
        return self._details_cache

    def ticker(self, query: Any) -> bytes:
        now = self.ex.now()
        second = now // 1000  # "generated once per second"
        if self._ticker_cache is None or self._ticker_cache[0] != second:
            rows = []
            for market in self.ex.spot_markets.values():
                feed = self.ex.feed_for(market)
                high, low, volume, then = feed.window_stats(now, DAY_MS)
                price = self.ex.price(market)
                tick = market.tick
                change = (float(price) - then) / then * 100 if then else 0.0
                rows.append(
                    {
                        "market": market.symbol,
                        "change_24_hour": f"{change:.3f}",
                        "high": f"{high}",
                        "low": f"{low}",
                        "volume": f"{volume * float(price):.2f}",
                        "last_price": format(price, "f"),
                        "bid": format(price - tick, "f"),
                        "ask": format(price + tick, "f"),
                        "timestamp": second,
                    }
                )
            self._ticker_cache = (second, _dumps(rows))
        return self._ticker_cache[1]

    def candles(self, query: Any) -> list[dict[str, Any]]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        interval = query.get("interval", "")
        if interval not in EXCHANGE_INTERVALS:
            raise SimError(422, f"Invalid interval: must be one of {', '.join(EXCHANGE_INTERVALS)}")
        feed = self.ex.feed_for(market)
        if not feed.supports(interval):
            raise SimError(
                422, f"Invalid interval: {interval} is finer than the simulator's feed ({feed.base_interval})"
            )
        limit = _int_param(query, "limit", 500)
        start, end = _int_param(query, "startTime", None), _int_param(query, "endTime", None)
        return feed.candles(interval, self.ex.now(), start, end, min(max(limit, 1), 1000))

    def order_book(self, query: Any) -> dict[str, Any]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        now = self.ex.now()
        price = self.ex.price(market)
        tick = market.tick
        spread = max(tick, market.round_price(price * Decimal("0.0001")))
        seed = zlib.crc32(f"{market.pair}:{now // 1000}".encode())
        bids, asks = {}, {}
        for i in range(1, 21):
            qty = (
                market.round_quantity(Decimal(((seed >> (i % 24)) % 97) + 3) * market.step * 10 * i)
                or market.step
            )
            bids[format(market.round_price(price - spread * i), "f")] = format(qty, "f")
            asks[format(market.round_price(price + spread * i), "f")] = format(qty, "f")
        return {"timestamp": now, "bids": bids, "asks": asks}

    def public_trades(self, query: Any) -> list[dict[str, Any]]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        limit = min(max(_int_param(query, "limit", 30), 1), 500)
        feed = self.ex.feed_for(market)
        n = feed.closed_count(self.ex.now())
        out = []
        for i in range(n - 1, max(n - limit, 0) - 1, -1):
            out.append(
                {
                    "p": float(feed.close[i]),
                    "q": float(round(feed.volume[i] / 10, 8)),
                    "s": market.symbol,
                    "T": int(feed.close_time[i]) - 1,
                    "m": bool(feed.close[i] < feed.open[i]),
                }
            )
        return out

    # ---- spot private ------------------------------------------------------------------------------

    def _add_spot(self) -> None:
        r = self.routes
        base = "/exchange/v1"
        r[f"{base}/users/balances"] = ("private", "", lambda a, b: a.balances_json())
        r[f"{base}/users/info"] = ("private", "", self.user_info)
        r[f"{base}/orders/create"] = ("private", "create", self.create)
        r[f"{base}/orders/create_multiple"] = ("private", "create_multiple", self.create_multiple)
        r[f"{base}/orders/status"] = ("private", "status", self.status)
        r[f"{base}/orders/status_multiple"] = ("private", "status_multiple", self.status_multiple)
        r[f"{base}/orders/active_orders"] = ("private", "active_orders", self.active_orders)
        r[f"{base}/orders/active_orders_count"] = ("private", "active_orders", self.active_orders_count)
        r[f"{base}/orders/trade_history"] = ("private", "", self.trade_history)
        r[f"{base}/orders/cancel"] = ("private", "cancel", self.cancel)
        r[f"{base}/orders/cancel_all"] = ("private", "cancel_all", self.cancel_all)
        r[f"{base}/orders/cancel_by_ids"] = ("private", "cancel_by_ids", self.cancel_by_ids)
        r[f"{base}/orders/edit"] = ("private", "edit", self.edit)

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

    # ---- admin -------------------------------------------------------------------------------------

    def _add_admin(self) -> None:
        r = self.routes
        r["/_sim/accounts"] = ("admin", "", self.admin_accounts)
        r["/_sim/accounts/bulk"] = ("admin", "", self.admin_accounts_bulk)
        r["/_sim/deposit"] = ("admin", "", self.admin_deposit)
        r["/_sim/advance"] = ("admin", "", self.admin_advance)
        r["/_sim/faults"] = ("admin", "", self.admin_faults)
        r["/_sim/ledger"] = ("admin", "", self.admin_ledger)
        r["/_sim/balances"] = ("admin", "", self.admin_balances)
        r["/_sim/state"] = ("admin", "", lambda req, body: self.ex.state())
        r["/_sim/clock"] = ("admin", "", lambda req, body: {"now_ms": self.ex.now()})
        r["/_sim/config"] = ("admin", "", self.admin_config)

    def admin_accounts(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "GET":
            return {"accounts": len(self.ex.accounts)}
        acct = self.ex.add_account(body.get("api_key", ""), body.get("api_secret", ""), body.get("balances"))
        return {"api_key": acct.api_key, "created": True}

    def admin_accounts_bulk(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("accounts") or []
        for item in items:
            self.ex.add_account(item.get("api_key", ""), item.get("api_secret", ""), item.get("balances"))
        return {"created": len(items)}

    def admin_deposit(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(body.get("api_key", ""))
        amount = req_decimal(body, "amount")
        acct.change(str(body["currency"]), amount, "deposit", self.ex.clock.now())
        return {"balances": acct.balances_json()}

    def admin_advance(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        now = self.ex.clock.now()
        if "to_ms" in body:
            target = int(body["to_ms"])
        elif "by_ms" in body:
            target = now + int(body["by_ms"])
        else:
            raise SimError(422, "Invalid Request: to_ms or by_ms is required")
        return self.ex.advance(target)

    def admin_faults(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "DELETE":
            self.faults.set([])
        elif request.method == "POST":
            rules = [FaultRule.from_json(r) for r in body.get("rules", [])]
            self.faults.set(rules, body.get("seed"))
        return self.faults.to_json()

    def admin_ledger(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(request.query_params.get("api_key") or body.get("api_key", ""))
        since = int(request.query_params.get("since_seq", 0))
        return {"entries": acct.ledger[since:]}

    def admin_balances(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(request.query_params.get("api_key") or body.get("api_key", ""))
        return {"balances": acct.balances_json()}

    def admin_config(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "POST":
            self.ex.config.update(body)
            self.limiter = self._make_limiter()
        return self.ex.config.to_json()


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _int_param(query: Any, name: str, default: int | None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SimError(422, f"Invalid Request: {name} must be an integer") from None
