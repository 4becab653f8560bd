"""Every CoinDCX endpoint, written once as a *plan*: a generator that yields `Call`s (one HTTP
request each) and receives their decoded JSON. The sync and async clients in `client.py` run the
same plans, so pagination and the create-then-look-up logic exist once.

Retries: reads retry with backoff on 429/5xx/timeouts. Calls that change orders are never
retried after an ambiguous failure (timeout, 5xx, dropped connection): `create_order_idempotent`
looks the order up by `client_order_id` first and only sends again once it is known absent.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.auth import Credentials, compact_json, mask_key
from xcoin_trading.exchange.errors import (
    AuthenticationError,
    DuplicateOrder,
    ExchangeError,
    ExchangeTimeout,
    ExchangeUnavailable,
    OrderNotFound,
    RateLimited,
    ServerError,
    error_from_body,
)
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.models import (
    AccountTrade,
    Balance,
    Order,
    OrderBook,
    Position,
    PublicTrade,
    Ticker,
)
from xcoin_trading.exchange.ratelimit import RateLimiter, default_limiter
from xcoin_trading.timeframes import RESOLUTION_MS, resolution_ms

MAX_CANDLES_PER_PAGE = 1000
CANDLE_SCHEMA = {
    "open_time": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
}
SIDES = ("buy", "sell")
SPOT_ORDER_TYPES = ("market_order", "limit_order")
FUTURES_ORDER_TYPES = ("market_order", "limit_order")
FUTURES = "/exchange/v1/derivatives/futures"


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request. `body` set → signed POST (timestamp added at send time)."""

    host: str  # "api" or "public"
    path: str
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    bucket: str = "general"  # rate-limit bucket (ratelimit.ENDPOINT_LIMITS)
    retry: bool = True  # False: changes state, never resent after an ambiguous failure
    exact: bool = True  # parse JSON floats as Decimal


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Plan = Generator[Call | Sleep, Any, Any]


def _endpoint(plan: Callable[..., Plan]) -> Callable[..., Any]:
    """Public method from a plan: sync clients return the value, async clients an awaitable."""

    @functools.wraps(plan)
    def method(self: Endpoints, *args: Any, **kwargs: Any) -> Any:
        return self._drive(plan(self, *args, **kwargs))

    return method


def _num(value: Decimal | int | str | float) -> str:
    """Decimal string for the wire: never exponent notation, never binary-float noise."""
    if isinstance(value, float):
        value = Decimal(repr(value))
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(d, "f")


def _check_choice(field: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}, got {value!r}")


def _check_positive(field: str, value: Any) -> Decimal:
    try:
        d = Decimal(_num(value))
    except Exception:
        raise ValidationError(field, f"must be a number, got {value!r}") from None
    if not d.is_finite() or d <= 0:
        raise ValidationError(field, f"must be > 0, got {value!r}")
    return d


def _one_of(id: str | None, client_order_id: str | None) -> dict[str, str]:
    if bool(id) == bool(client_order_id):
        raise ValidationError("id", "give exactly one of id or client_order_id")
    return {"id": id} if id else {"client_order_id": client_order_id}  # type: ignore[dict-item]


def _is_pair(name: str) -> bool:
    return "-" in name and "_" in name


def decode_reply(status: int, headers: Mapping[str, str], content: bytes, call: Call) -> Any:
    """The reply's JSON, or its typed error: one decoding for every transport (`headers`
    looked up case-insensitively, as httpx and aiohttp both do)."""
    try:
        body = json.loads(content, parse_float=Decimal) if call.exact else json.loads(content)
    except ValueError:
        body = content.decode(errors="replace")
    if status >= 400:
        retry_after = headers.get("retry-after")
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        raise error_from_body(status, body, retry_after=wait, endpoint=call.path)
    if isinstance(body, dict) and body.get("status") == "error":
        raise error_from_body(int(body.get("code") or 422), body, endpoint=call.path)
    if isinstance(body, str):
        raise ServerError("reply was not JSON", status=status, endpoint=call.path)
    return body


class Endpoints:
    """Endpoints as plans plus the transport-independent request/response handling."""

    def __init__(
        self,
        api_url: str,
        public_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        read_attempts: int = 4,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
    ):
        self.api_url = api_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self.rate_limiter = rate_limiter if rate_limiter is not None else default_limiter()
        self.read_attempts = max(1, read_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._markets: list[Market] | None = None

    @classmethod
    def from_settings(cls, settings: Any, credentials: Credentials | None = None, **kwargs: Any):
        from xcoin_trading.config import DEFAULT_API_URL, DEFAULT_PUBLIC_URL

        return cls(
            getattr(settings, "api_url", None) or DEFAULT_API_URL,
            getattr(settings, "public_url", None) or DEFAULT_PUBLIC_URL,
            credentials,
            **kwargs,
        )

    def __repr__(self) -> str:
        who = mask_key(self.credentials.api_key) if self.credentials else "public"
        return f"{type(self).__name__}(api_url={self.api_url!r}, key={who!r})"

    # ---- request / response -------------------------------------------------------------

    def _limit_key(self, call: Call) -> str:
        return self.credentials.api_key if (call.body is not None and self.credentials) else "public"

    def _prepare(self, call: Call) -> tuple[str, str, bytes | None, dict[str, str] | None]:
        base = self.api_url if call.host == "api" else self.public_url
        url = base + call.path
        if call.body is None:
            return "GET", url, None, None
        if self.credentials is None:
            raise AuthenticationError("this endpoint needs API credentials", endpoint=call.path)
        body = dict(call.body)
        body["timestamp"] = int(time.time() * 1000)  # keeps its position when pre-declared
        payload = compact_json(body)
        return "POST", url, payload, self.credentials.headers(payload)

    @staticmethod
    def _transport_error(exc: Exception, call: Call) -> ExchangeError:
        # Never put the exception text in: it may carry request details.
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return ExchangeUnavailable(f"could not connect ({type(exc).__name__})", endpoint=call.path)
        if isinstance(exc, httpx.TimeoutException):
            return ExchangeTimeout(f"no reply in time ({type(exc).__name__})", endpoint=call.path)
        return ExchangeTimeout(f"connection failed mid-request ({type(exc).__name__})", endpoint=call.path)

    @staticmethod
    def _decode(response: httpx.Response, call: Call) -> Any:
        return decode_reply(response.status_code, response.headers, response.content, call)

    def _retry_delay(self, call: Call, attempt: int, exc: ExchangeError) -> float | None:
        """Seconds before another attempt, or None to give up and raise."""
        if attempt >= self.read_attempts:
            return None
        exchange_did_not_act = isinstance(exc, RateLimited | ExchangeUnavailable)  # safe for any call
        if not exchange_did_not_act and not (call.retry and isinstance(exc, ServerError | ExchangeTimeout)):
            return None
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        return delay

    # ---- pair lookup (cached) ---------------------------------------------------------------

    def _p_markets_details(self) -> Plan:
        rows = yield Call("api", "/exchange/v1/markets_details")
        markets = [Market.from_details(r) for r in rows]
        self._markets = markets
        return markets

    def _p_market(self, symbol: str) -> Plan:
        """Market metadata for a spot symbol (BTCUSDT) or a pair (B-BTC_USDT); cached."""
        markets = self._markets if self._markets is not None else (yield from self._p_markets_details())
        for m in markets:
            if m.symbol == symbol and m.status == "active":
                return m
        for m in markets:
            if symbol in (m.symbol, m.pair):
                return m
        raise ValidationError("symbol", f"is not listed on the exchange: {symbol!r}")

    def _p_pair(self, symbol_or_pair: str) -> Plan:
        if _is_pair(symbol_or_pair):
            return symbol_or_pair
        return (yield from self._p_market(symbol_or_pair)).pair

    # ---- public -------------------------------------------------------------------------------

    def _p_ticker(self) -> Plan:
        """Last price, bid/ask and 24 h stats of every market."""
        rows = yield Call("api", "/exchange/ticker")
        return [Ticker.from_json(r) for r in rows]

    def _p_markets(self) -> Plan:
        """Every market symbol."""
        return list((yield Call("api", "/exchange/v1/markets")))

    def _p_candles_page(
        self,
        pair: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> Plan:
        """One raw page of candles (as the exchange sends them: newest first, open time `time`)."""
        resolution_ms(interval)
        params: dict[str, Any] = {
            "pair": pair,
            "interval": interval,
            "limit": min(int(limit), MAX_CANDLES_PER_PAGE),
        }
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        return (yield Call("public", "/market_data/candles", params=params, exact=False))

    def _p_fetch_candles(self, symbol_or_pair: str, interval: str, start_ms: int, end_ms: int) -> Plan:
        """Candles with start_ms <= open_time < end_ms, ascending, exact duplicates removed.

        Pages are windows of at most 1000 candles, so the result does not depend on whether the
        server fills a page from its start or its end. No cleaning beyond sort + dedupe: the
        market-data layer must see what the exchange sent.
        """
        step = resolution_ms(interval)
        if int(start_ms) >= int(end_ms):
            raise ValidationError("end_ms", f"must be after start_ms ({start_ms}), got {end_ms}")
        pair = yield from self._p_pair(symbol_or_pair)
        rows: list[dict[str, Any]] = []
        cursor = int(start_ms)
        span = (
            step * MAX_CANDLES_PER_PAGE
            if interval != "1M"
            else RESOLUTION_MS["1d"] * 28 * MAX_CANDLES_PER_PAGE
        )
        while cursor < end_ms:
            window_end = min(int(end_ms), cursor + span) - 1  # endTime is inclusive
            page = yield from self._p_candles_page(pair, interval, cursor, window_end, MAX_CANDLES_PER_PAGE)
            rows.extend(page)
            cursor = window_end + 1
        return _candles_frame(rows, int(start_ms), int(end_ms))

    def _p_order_book(self, symbol_or_pair: str) -> Plan:
        pair = yield from self._p_pair(symbol_or_pair)
        body = yield Call("public", "/market_data/orderbook", params={"pair": pair})
        return OrderBook.from_json(pair, body)

    def _p_public_trades(self, symbol_or_pair: str, limit: int = 30) -> Plan:
        pair = yield from self._p_pair(symbol_or_pair)
        rows = yield Call(
            "public", "/market_data/trade_history", params={"pair": pair, "limit": min(int(limit), 500)}
        )
        return [PublicTrade.from_json(r) for r in rows]

    # ---- spot private ---------------------------------------------------------------------------

    def _p_balances(self) -> Plan:
        rows = yield Call("api", "/exchange/v1/users/balances", body={})
        return [Balance.from_json(r) for r in rows]

    def _p_balance(self, currency: str) -> Plan:
        """One currency's balance (zero when the account has never held it)."""
        for b in (yield from self._p_balances()):
            if b.currency == currency:
                return b
        return Balance(currency, Decimal(0), Decimal(0))

    def _p_user_info(self) -> Plan:
        rows = yield Call("api", "/exchange/v1/users/info", body={})
        return rows[0] if isinstance(rows, list) and rows else rows

    @staticmethod
    def _order_body(
        market: str, side: str, order_type: str, quantity: Any, price: Any, client_order_id: str | None
    ) -> dict[str, Any]:
        _check_choice("side", side, SIDES)
        _check_choice("order_type", order_type, SPOT_ORDER_TYPES)
        body: dict[str, Any] = {"side": side, "order_type": order_type, "market": market}
        if order_type == "limit_order":
            if price is None:
                raise ValidationError("price", "is required for a limit order")
            body["price_per_unit"] = _num(_check_positive("price", price))
        body["total_quantity"] = _num(_check_positive("quantity", quantity))
        if client_order_id is not None:
            if not (0 < len(client_order_id) <= 36):
                raise ValidationError(
                    "client_order_id", f"must be 1..36 characters, got {len(client_order_id)}"
                )
            body["client_order_id"] = client_order_id
        return body

    def _p_create_order(
        self,
        market: str,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        client_order_id: str | None = None,
    ) -> Plan:
        """Place one spot order. Never resent on its own: see `create_order_idempotent`."""
        body = self._order_body(market, side, order_type, quantity, price, client_order_id)
        reply = yield Call("api", "/exchange/v1/orders/create", body=body, bucket="create", retry=False)
        return Order.from_spot(reply["orders"][0])

    def _p_create_orders(self, orders: list[dict[str, Any]]) -> Plan:
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

    def _p_order_status(self, id: str | None = None, client_order_id: str | None = None) -> Plan:
        row = yield Call(
            "api", "/exchange/v1/orders/status", body=_one_of(id, client_order_id), bucket="status"
        )
        return Order.from_spot(row)

    def _p_order_status_multiple(
        self, ids: list[str] | None = None, client_order_ids: list[str] | None = None
    ) -> Plan:
        if bool(ids) == bool(client_order_ids):
            raise ValidationError("ids", "give exactly one of ids or client_order_ids")
        body = {"ids": list(ids)} if ids else {"client_order_ids": list(client_order_ids or [])}
        rows = yield Call("api", "/exchange/v1/orders/status_multiple", body=body, bucket="status_multiple")
        return [Order.from_spot(r) for r in rows]

    def _p_active_orders(self, market: str, side: str | None = None) -> Plan:
        body: dict[str, Any] = {"market": market}
        if side is not None:
            _check_choice("side", side, SIDES)
            body["side"] = side
        reply = yield Call("api", "/exchange/v1/orders/active_orders", body=body, bucket="active_orders")
        rows = reply.get("orders", []) if isinstance(reply, dict) else reply  # 2024 shape or documented list
        return [Order.from_spot(r) for r in rows]

    def _p_active_orders_count(self, market: str, side: str | None = None) -> Plan:
        body: dict[str, Any] = {"market": market}
        if side is not None:
            _check_choice("side", side, SIDES)
            body["side"] = side
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
    ) -> Plan:
        _check_choice("sort", sort, ("asc", "desc"))
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

    def _p_cancel_order(self, id: str | None = None, client_order_id: str | None = None) -> Plan:
        yield Call(
            "api",
            "/exchange/v1/orders/cancel",
            body=_one_of(id, client_order_id),
            bucket="cancel",
            retry=False,
        )

    def _p_cancel_all(self, market: str, side: str | None = None) -> Plan:
        body: dict[str, Any] = {"market": market}
        if side is not None:
            _check_choice("side", side, SIDES)
            body["side"] = side
        yield Call("api", "/exchange/v1/orders/cancel_all", body=body, bucket="cancel_all", retry=False)

    def _p_cancel_by_ids(
        self, ids: list[str] | None = None, client_order_ids: list[str] | None = None
    ) -> Plan:
        if bool(ids) == bool(client_order_ids):
            raise ValidationError("ids", "give exactly one of ids or client_order_ids")
        body = {"ids": list(ids)} if ids else {"client_order_ids": list(client_order_ids or [])}
        yield Call("api", "/exchange/v1/orders/cancel_by_ids", body=body, bucket="cancel_by_ids", retry=False)

    def _p_edit_price(self, price: Any, id: str | None = None, client_order_id: str | None = None) -> Plan:
        body: dict[str, Any] = _one_of(id, client_order_id)
        body["price_per_unit"] = _num(_check_positive("price", price))
        row = yield Call("api", "/exchange/v1/orders/edit", body=body, bucket="edit", retry=False)
        return Order.from_spot(row)

    # ---- futures --------------------------------------------------------------------------------

    def _p_futures_set_leverage(self, pair: str, leverage: Any, margin_currency: str = "USDT") -> Plan:
        lev = _check_positive("leverage", leverage)
        body = {"pair": pair, "leverage": _num(lev), "margin_currency_short_name": margin_currency}
        yield Call("api", f"{FUTURES}/positions/update_leverage", body=body, retry=False)

    def _p_futures_ensure_leverage(self, pair: str, leverage: Any, attempts: int = 2) -> Plan:
        """Leverage set on `pair`, classified by the exchange's own answer: after any failure
        (executed? not executed? unknown) the position's leverage is read back, and only a
        confirmed "not set" is sent again. Raises when it cannot be confirmed: the entry that
        needs it must then not be sent."""
        wanted = _check_positive("leverage", leverage)
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
    ) -> Plan:
        """Open/extend (or reduce) a futures position: buy = LONG, sell = SHORT. Never resent."""
        _check_choice("side", side, SIDES)
        _check_choice("order_type", order_type, FUTURES_ORDER_TYPES)
        order: dict[str, Any] = {"side": side, "pair": pair, "order_type": order_type}
        if order_type == "limit_order":
            if price is None:
                raise ValidationError("price", "is required for a limit order")
            order["price"] = _num(_check_positive("price", price))
        order["total_quantity"] = _num(_check_positive("quantity", quantity))
        if leverage is not None:
            order["leverage"] = _num(_check_positive("leverage", leverage))
        if take_profit_price is not None:
            order["take_profit_price"] = _num(_check_positive("take_profit_price", take_profit_price))
        if stop_loss_price is not None:
            order["stop_loss_price"] = _num(_check_positive("stop_loss_price", stop_loss_price))
        if client_order_id is not None:
            if not (0 < len(client_order_id) <= 36):
                raise ValidationError(
                    "client_order_id", f"must be 1..36 characters, got {len(client_order_id)}"
                )
            order["client_order_id"] = client_order_id
        order["margin_currency_short_name"] = margin_currency
        body = {"timestamp": None, "order": order}  # futures docs put timestamp first
        rows = yield Call("api", f"{FUTURES}/orders/create", body=body, bucket="create", retry=False)
        return Order.from_futures(rows[0])

    def _p_futures_instrument(self, pair: str, margin_currency: str = "USDT") -> Plan:
        """Futures sizing rules of one pair (tick, quantity step, minimums, leverage) as a `Market`."""
        reply = yield Call(
            "api",
            f"{FUTURES}/data/instrument",
            params={"pair": pair, "margin_currency_short_name": margin_currency},
        )
        return Market.from_instrument(reply["instrument"] | {"pair": pair}, margin_currency)

    def _p_futures_active_instruments(self, margin_currency: str = "USDT") -> Plan:
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
    ) -> Plan:
        body: dict[str, Any] = {
            "page": str(page),
            "size": str(size),
            "margin_currency_short_name": [margin_currency],
        }
        if statuses:
            body["status"] = ",".join(statuses)
        if side is not None:
            _check_choice("side", side, SIDES)
            body["side"] = side
        rows = yield Call("api", f"{FUTURES}/orders", body=body)
        return [Order.from_futures(r) for r in rows]

    def _p_futures_cancel_order(self, id: str) -> Plan:
        yield Call("api", f"{FUTURES}/orders/cancel", body={"id": id}, bucket="cancel", retry=False)

    def _p_futures_positions(
        self,
        pairs: Iterable[str] | None = None,
        page: int = 1,
        size: int = 100,
        margin_currency: str = "USDT",
    ) -> Plan:
        body: dict[str, Any] = {
            "page": str(page),
            "size": str(size),
            "margin_currency_short_name": [margin_currency],
        }
        if pairs:
            body["pairs"] = ",".join(pairs)
        rows = yield Call("api", f"{FUTURES}/positions", body=body)
        return [Position.from_json(r) for r in rows]

    def _p_futures_create_tpsl(
        self, position_id: str, take_profit: Any = None, stop_loss: Any = None
    ) -> Plan:
        """Position-level TP/SL (market orders on trigger). Returns {"take_profit": Order | ExchangeError, ...}."""
        if take_profit is None and stop_loss is None:
            raise ValidationError("take_profit", "give a take profit and/or a stop loss price")
        body: dict[str, Any] = {"id": position_id}
        if take_profit is not None:
            tp = _num(_check_positive("take_profit", take_profit))
            body["take_profit"] = {"stop_price": tp, "limit_price": tp, "order_type": "take_profit_market"}
        if stop_loss is not None:
            sl = _num(_check_positive("stop_loss", stop_loss))
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

    def _p_futures_exit_position(self, position_id: str) -> Plan:
        reply = yield Call("api", f"{FUTURES}/positions/exit", body={"id": position_id}, retry=False)
        return reply.get("data") or {}

    # ---- idempotent creation ----------------------------------------------------------------------

    def _p_find_order_by_client_id(
        self, client_order_id: str, market: str | None = None, *, kind: str = "spot"
    ) -> Plan:
        """The order with this client id, or None when the exchange says it has none.

        Spot: `orders/status` by client id, then the market's open orders. Futures (status by
        client id is not offered): the order lists. A failed query raises: "could not ask" is
        not "absent".
        """
        if kind == "futures":
            for page in range(1, 50):
                rows = yield from self._p_futures_orders(page=page, size=100)
                for order in rows:
                    if order.client_order_id == client_order_id:
                        return order
                if len(rows) < 100:
                    return None
            return None
        try:
            return (yield from self._p_order_status(client_order_id=client_order_id))
        except OrderNotFound:
            pass
        if market:
            for order in (yield from self._p_active_orders(market)):
                if order.client_order_id == client_order_id:
                    return order
        return None

    def _p_create_order_idempotent(
        self,
        market: str,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        *,
        client_order_id: str,
        kind: str = "spot",
        lookups: int = 3,
        lookup_delay: float = 0.25,
        max_sends: int = 2,
        **futures_kwargs: Any,
    ) -> Plan:
        """Create, or find the order an earlier ambiguous attempt created: never a second order.

        After a timeout/5xx the order is looked up by `client_order_id` (a few times, `lookup_delay`
        apart); only when the exchange answers that it has no such order is it sent again (with the
        same client id, which the exchange also refuses to duplicate).
        """
        if not client_order_id:
            raise ValidationError("client_order_id", "is required for idempotent creation")
        sends = 0
        while True:
            sends += 1
            try:
                if kind == "futures":
                    return (
                        yield from self._p_futures_create_order(
                            market,
                            side,
                            order_type,
                            quantity,
                            price,
                            client_order_id=client_order_id,
                            **futures_kwargs,
                        )
                    )
                return (
                    yield from self._p_create_order(
                        market, side, order_type, quantity, price, client_order_id
                    )
                )
            except DuplicateOrder:
                found = yield from self._p_find_order_by_client_id(client_order_id, market, kind=kind)
                if found is None:
                    raise
                return found
            except ExchangeError as exc:
                if not exc.ambiguous:
                    raise
                found = None
                for attempt in range(lookups):
                    if attempt:
                        yield Sleep(lookup_delay)
                    found = yield from self._p_find_order_by_client_id(client_order_id, market, kind=kind)
                    if found is not None:
                        return found
                if sends >= max_sends:
                    raise
                yield Sleep(lookup_delay)

    # ---- public method table -------------------------------------------------------------------

    markets_details = _endpoint(_p_markets_details)
    market = _endpoint(_p_market)
    ticker = _endpoint(_p_ticker)
    markets = _endpoint(_p_markets)
    candles_page = _endpoint(_p_candles_page)
    fetch_candles = _endpoint(_p_fetch_candles)
    order_book = _endpoint(_p_order_book)
    public_trades = _endpoint(_p_public_trades)
    balances = _endpoint(_p_balances)
    balance = _endpoint(_p_balance)
    user_info = _endpoint(_p_user_info)
    create_order = _endpoint(_p_create_order)
    create_orders = _endpoint(_p_create_orders)
    order_status = _endpoint(_p_order_status)
    order_status_multiple = _endpoint(_p_order_status_multiple)
    active_orders = _endpoint(_p_active_orders)
    active_orders_count = _endpoint(_p_active_orders_count)
    trade_history = _endpoint(_p_trade_history)
    cancel_order = _endpoint(_p_cancel_order)
    cancel_all = _endpoint(_p_cancel_all)
    cancel_by_ids = _endpoint(_p_cancel_by_ids)
    edit_price = _endpoint(_p_edit_price)
    futures_set_leverage = _endpoint(_p_futures_set_leverage)
    futures_ensure_leverage = _endpoint(_p_futures_ensure_leverage)
    futures_create_order = _endpoint(_p_futures_create_order)
    futures_instrument = _endpoint(_p_futures_instrument)
    futures_active_instruments = _endpoint(_p_futures_active_instruments)
    futures_orders = _endpoint(_p_futures_orders)
    futures_cancel_order = _endpoint(_p_futures_cancel_order)
    futures_positions = _endpoint(_p_futures_positions)
    futures_create_tpsl = _endpoint(_p_futures_create_tpsl)
    futures_exit_position = _endpoint(_p_futures_exit_position)
    find_order_by_client_id = _endpoint(_p_find_order_by_client_id)
    create_order_idempotent = _endpoint(_p_create_order_idempotent)

    def _drive(self, plan: Plan) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


def _candles_frame(rows: list[dict[str, Any]], start_ms: int, end_ms: int) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    frame = pl.DataFrame(
        {
            "open_time": [int(r["time"]) for r in rows],
            "open": [r["open"] for r in rows],
            "high": [r["high"] for r in rows],
            "low": [r["low"] for r in rows],
            "close": [r["close"] for r in rows],
            "volume": [r["volume"] for r in rows],
        },
        schema=CANDLE_SCHEMA,
        strict=False,
    )
    return (
        frame.filter((pl.col("open_time") >= start_ms) & (pl.col("open_time") < end_ms))
        .unique(maintain_order=True)
        .sort("open_time", maintain_order=True)
    )
