"""The simulator's ASGI app: CoinDCX paths, JSON shapes, error bodies, signature checks, rate
limits and fault injection, plus the admin API under `/_sim/` (no auth: a local test tool).

A plain ASGI callable (scope, receive, send) dispatches through a dict (O(1) per request): it
answers as the Starlette catch-all route it replaced did (same statuses, headers and bodies, 405
for other methods, a plain-text 500 on a crash) at about half the framework CPU per request — the
simulator shares the cores with the fan-out it serves. Error bodies are
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
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from xcoin_trading.exchange.ratelimit import RateLimiter
from xcoin_trading.exchange.simulator.accounts import Account, SimError
from xcoin_trading.exchange.simulator.engine import Exchange
from xcoin_trading.exchange.simulator.faults import Decision, FaultRule, Faults
from xcoin_trading.exchange.simulator.routes_futures import futures_routes
from xcoin_trading.exchange.simulator.routes_public import PublicRoutes
from xcoin_trading.exchange.simulator.routes_spot import SpotRoutes
from xcoin_trading.exchange.simulator.wire import dumps, fast_dumps, loads, req_decimal

Handler = Callable[..., Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_METHODS = ("GET", "POST", "DELETE", "HEAD")  # HEAD comes with GET, as in Starlette
_ALLOW = ", ".join(_METHODS)
_ROUTE_PATH = re.compile("^/(?P<path>.*)$")  # the catch-all route's pattern: no newline inside


class Reply:
    """Status, body and extra headers of one answer (what a Starlette Response carried here)."""

    __slots__ = ("status", "body", "headers", "media_type")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        media_type: bytes = _JSON,
    ):
        self.status = status
        self.body = body
        self.headers = headers
        self.media_type = media_type

    async def __call__(self, send: Send) -> None:
        # Header order as Starlette's Response: given headers, content-length, content-type.
        raw = [(b"content-length", b"%d" % len(self.body)), (b"content-type", self.media_type)]
        if self.headers:
            raw[:0] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(dumps({"code": status, "message": message, "status": "error"}), status, headers)


class SimRequest:
    """What the admin handlers read of a request: its method and query parameters."""

    __slots__ = ("method", "_query_string", "_query")

    def __init__(self, method: str, query_string: bytes):
        self.method = method
        self._query_string = query_string
        self._query: dict[str, str] | None = None

    @property
    def query_params(self) -> dict[str, str]:
        """Last value per name, blanks kept (as Starlette's QueryParams.get answers)."""
        if self._query is None:
            self._query = dict(parse_qsl(self._query_string.decode("latin-1"), keep_blank_values=True))
        return self._query


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected while sending the body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class SimulatorApp:
    """Wraps an `Exchange`; `.asgi` is what uvicorn serves."""

    def __init__(self, exchange: Exchange, faults: Faults | None = None):
        self.ex = exchange
        self.faults = faults or Faults()
        self.limiter = self._make_limiter()
        # path -> (kind, rate-limit bucket, handler); kind: public | private | admin
        self.routes: dict[str, tuple[str, str, Handler]] = {
            **PublicRoutes(exchange).routes(),
            **SpotRoutes(exchange).routes(),
            **self._admin_routes(),
            **futures_routes(exchange.futures),
        }
        self.asgi = self.__call__

    def _make_limiter(self) -> RateLimiter:
        cfg = self.ex.config
        return RateLimiter(enabled=cfg.rate_limits, scale=cfg.rate_limit_scale)

    # ---- dispatch --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":  # no websocket route: closed, as Starlette's router does
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        try:
            reply = await self._answer(scope, receive)
        except Exception:  # nothing sent yet: a plain 500, as Starlette's ServerErrorMiddleware
            await Reply(b"Internal Server Error", 500, media_type=_TEXT)(send)
            raise  # uvicorn logs it
        await reply(send)

    async def _answer(self, scope: Scope, receive: Receive) -> Reply:
        path: str = scope["path"]
        if ("\n" in path or not path.startswith("/")) and _ROUTE_PATH.match(path) is None:
            return Reply(b"Not Found", 404, media_type=_TEXT)
        if scope["method"] not in _METHODS:
            return Reply(b"Method Not Allowed", 405, {"Allow": _ALLOW}, _TEXT)
        return await self.dispatch(path, scope, receive)

    async def dispatch(self, path: str, scope: Scope, receive: Receive) -> Reply:
        route = self.routes.get(path)
        if route is None:
            return error_response(404, "not_found")
        kind, bucket, handler = route
        if kind == "admin":
            return await self._admin(SimRequest(scope["method"], scope["query_string"]), receive, handler)
        decision = self.faults.decide(path) if self.faults.rules else None
        if decision is not None:
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            if decision.action == "429":
                return error_response(
                    429,
                    "Too Many Requests",
                    {"Retry-After": _retry_after(_acting_rule(decision).retry_after_s)},
                )
            if decision.action == "5xx":
                return error_response(_acting_rule(decision).error_5xx_status, "Internal Server Error")
            if decision.action == "timeout":
                await asyncio.sleep(_acting_rule(decision).timeout_s)
                return error_response(504, "Gateway Timeout")
        try:
            if kind == "public":
                result = handler(SimRequest(scope["method"], scope["query_string"]).query_params)
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
                raw = await _read_body(receive)
                acct, request = self._authenticate(scope["headers"], raw)
                if self.limiter.enabled:
                    wait = self.limiter.check(acct.api_key, bucket)
                    if wait:
                        return error_response(429, "Too Many Requests", {"Retry-After": _retry_after(wait)})
                result = handler(acct, request)
        except SimError as exc:
            return error_response(exc.status, exc.message)
        if decision is not None and decision.action == "lost_reply":
            delay_s = _acting_rule(decision).lost_reply_delay_s
            if delay_s:
                await asyncio.sleep(delay_s)
            return error_response(504, "Gateway Timeout")
        if isinstance(result, bytes):
            return Reply(result)
        # Private answers come from the desks (floats only via jnum): the fast encoder, which
        # falls back to json wherever its bytes could differ; public ones keep json (feed floats).
        return Reply(fast_dumps(result) if kind == "private" else dumps(result))

    def _authenticate(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> tuple[Account, dict[str, Any]]:
        key = signature = None
        for name, value in headers:  # the first of each, as Starlette's Headers.get
            if key is None and name == b"x-auth-apikey":
                key = value.decode("latin-1")
            elif signature is None and name == b"x-auth-signature":
                signature = value.decode("latin-1")
        if not key or not signature:
            raise SimError(
                401, "Invalid credentials: X-AUTH-APIKEY and X-AUTH-SIGNATURE headers are required"
            )
        acct = self.ex.accounts.get(key)
        if acct is None or not acct.verify(raw, signature):
            raise SimError(401, "Invalid credentials")
        try:
            body = loads(raw) if raw else {}
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

    async def _admin(self, request: SimRequest, receive: Receive, handler: Handler) -> Reply:
        raw = await _read_body(receive)
        try:
            body = loads(raw) if raw else {}
            result = handler(request, body)
        except SimError as exc:
            return error_response(exc.status, exc.message)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(422, f"Invalid Request: {exc}")
        return Reply(dumps(result))

    # ---- admin -------------------------------------------------------------------------------------

    def _admin_routes(self) -> dict[str, tuple[str, str, Handler]]:
        return {
            "/_sim/accounts": ("admin", "", self.admin_accounts),
            "/_sim/accounts/bulk": ("admin", "", self.admin_accounts_bulk),
            "/_sim/deposit": ("admin", "", self.admin_deposit),
            "/_sim/advance": ("admin", "", self.admin_advance),
            "/_sim/faults": ("admin", "", self.admin_faults),
            "/_sim/ledger": ("admin", "", self.admin_ledger),
            "/_sim/balances": ("admin", "", self.admin_balances),
            "/_sim/state": ("admin", "", lambda req, body: self.ex.state()),
            "/_sim/clock": ("admin", "", lambda req, body: {"now_ms": self.ex.now()}),
            "/_sim/config": ("admin", "", self.admin_config),
        }

    def admin_accounts(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "GET":
            return {"accounts": len(self.ex.accounts)}
        acct = self.ex.add_account(body.get("api_key", ""), body.get("api_secret", ""), body.get("balances"))
        return {"api_key": acct.api_key, "created": True}

    def admin_accounts_bulk(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("accounts") or []
        for item in items:
            self.ex.add_account(item.get("api_key", ""), item.get("api_secret", ""), item.get("balances"))
        return {"created": len(items)}

    def admin_deposit(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(body.get("api_key", ""))
        amount = req_decimal(body, "amount")
        acct.change(str(body["currency"]), amount, "deposit", self.ex.clock.now())
        return {"balances": acct.balances_json()}

    def admin_advance(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        now = self.ex.clock.now()
        if "to_ms" in body:
            target = int(body["to_ms"])
        elif "by_ms" in body:
            target = now + int(body["by_ms"])
        else:
            raise SimError(422, "Invalid Request: to_ms or by_ms is required")
        return self.ex.advance(target)

    def admin_faults(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "DELETE":
            self.faults.set([])
        elif request.method == "POST":
            rules = [FaultRule.from_json(r) for r in body.get("rules", [])]
            self.faults.set(rules, body.get("seed"))
        return self.faults.to_json()

    def admin_ledger(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(request.query_params.get("api_key") or body.get("api_key", ""))
        since = int(request.query_params.get("since_seq", 0))
        return {"entries": acct.ledger_json(since)}

    def admin_balances(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.ex.account(request.query_params.get("api_key") or body.get("api_key", ""))
        return {"balances": acct.balances_json()}

    def admin_config(self, request: SimRequest, body: dict[str, Any]) -> dict[str, Any]:
        if request.method == "POST":
            self.ex.config.update(body)
            self.limiter = self._make_limiter()
        return self.ex.config.to_json()


def _acting_rule(decision: Decision) -> FaultRule:
    """The rule behind a decision's action; Faults.decide sets both together."""
    if decision.rule is None:
        raise AssertionError(f"fault action {decision.action!r} without its rule")
    return decision.rule


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
