"""Request machinery every endpoint group shares: a `Call` is one HTTP request, a *plan* is a
generator that yields calls and receives their decoded JSON, and `endpoint` turns a plan into the
public method (a value on the blocking client, an awaitable on the async one).

Retries: reads retry with backoff on 429/5xx/timeouts. Calls that change orders are never retried
after an ambiguous failure (timeout, 5xx, dropped connection): see `idempotent.py`.
"""

from __future__ import annotations

import json
import random
import time
import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.auth import Credentials, compact_json, mask_key
from xcoin_trading.exchange.errors import (
    AuthenticationError,
    ExchangeError,
    ExchangeTimeout,
    ExchangeUnavailable,
    RateLimited,
    ServerError,
    error_from_body,
)
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.ratelimit import RateLimiter, default_limiter
from xcoin_trading.money import to_decimal

T = TypeVar("T")
P = ParamSpec("P")
SIDES = ("buy", "sell")


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


# A plan yields calls (or sleeps), receives each call's decoded JSON and returns its result.
Plan = Generator[Call | Sleep, Any, T]


_EXACT = json.JSONDecoder(parse_float=Decimal)  # floats as exact decimals
_PLAIN = json.JSONDecoder()


def decode_reply(status: int, headers: Mapping[str, str], content: bytes, call: Call) -> Any:
    """The reply's JSON, or its typed error: one decoding for every transport (`headers`
    looked up case-insensitively, as httpx and aiohttp both do)."""
    try:  # as json.loads(content) decodes bytes, with a decoder built once
        text = content.decode(json.detect_encoding(content), "surrogatepass")
        body = (_EXACT if call.exact else _PLAIN).decode(text)
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


class Requests:
    """Transport-independent request/response handling; a client adds `_drive` (run a plan)."""

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
    def from_settings(cls, settings: Any, credentials: Credentials | None = None, **kwargs: Any) -> Self:
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

    def _drive(self, plan: Plan[Any]) -> Any:  # pragma: no cover - each client runs plans its way
        raise NotImplementedError

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


class AsyncRequests(Requests):
    """Marks a client whose endpoint methods return awaitables (see `endpoint`)."""


class endpoint(Generic[P, T]):  # noqa: N801 - used like a decorator
    """A public method from a plan: `client.balance("USDT")` is a `Balance` on a blocking client
    and an `Awaitable[Balance]` on an async one; type checkers see which."""

    def __init__(self, plan: Callable[Concatenate[Any, P], Plan[T]]):
        self.plan = plan
        self.__doc__ = plan.__doc__

        def run(client: Requests, *args: Any, **kwargs: Any) -> Any:
            return client._drive(plan(client, *args, **kwargs))

        run.__doc__ = plan.__doc__
        self._run = run

    def __set_name__(self, owner: type, name: str) -> None:
        self._run.__name__ = self._run.__qualname__ = name  # repr and tracebacks name the method

    @overload
    def __get__(self, client: None, owner: type) -> endpoint[P, T]: ...
    @overload
    def __get__(self, client: AsyncRequests, owner: type) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, client: Requests, owner: type) -> Callable[P, T]: ...
    def __get__(self, client: Requests | None, owner: type) -> Any:
        return self if client is None else types.MethodType(self._run, client)


# ---- request bodies: checked before anything is sent ------------------------------------------


def wire_number(value: Decimal | int | str | float) -> str:
    """Decimal string for the wire: never exponent notation, never binary-float noise."""
    return format(to_decimal(value), "f")


def check_choice(field: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}, got {value!r}")


def positive(field: str, value: Any) -> str:
    """`value` as a wire number; raises naming `field` unless it is a finite number > 0."""
    return wire_number(check_positive(field, value))


def check_positive(field: str, value: Any) -> Decimal:
    try:
        d = to_decimal(value)
    except Exception:
        raise ValidationError(field, f"must be a number, got {value!r}") from None
    if not d.is_finite() or d <= 0:
        raise ValidationError(field, f"must be > 0, got {value!r}")
    return d


def one_of(id: str | None, client_order_id: str | None) -> dict[str, str]:
    if bool(id) == bool(client_order_id):
        raise ValidationError("id", "give exactly one of id or client_order_id")
    return {"id": id} if id else {"client_order_id": client_order_id}  # type: ignore[dict-item]


def ids_body(ids: list[str] | None, client_order_ids: list[str] | None) -> dict[str, list[str]]:
    if bool(ids) == bool(client_order_ids):
        raise ValidationError("ids", "give exactly one of ids or client_order_ids")
    return {"ids": list(ids)} if ids else {"client_order_ids": list(client_order_ids or [])}


def check_new_order(side: str, order_type: str, price: Any) -> None:
    check_choice("side", side, SIDES)
    check_choice("order_type", order_type, ("market_order", "limit_order"))
    if order_type == "limit_order" and price is None:
        raise ValidationError("price", "is required for a limit order")


def client_id(value: str) -> str:
    if not (0 < len(value) <= 36):
        raise ValidationError("client_order_id", f"must be 1..36 characters, got {len(value)}")
    return value


def side_filter(body: dict[str, Any], side: str | None) -> dict[str, Any]:
    if side is not None:
        check_choice("side", side, SIDES)
        body["side"] = side
    return body
