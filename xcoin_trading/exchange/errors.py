"""Typed exchange errors, built from CoinDCX's error body `{"code", "message", "status"}`.

`ambiguous` says whether the request may have been executed although we got no answer
(timeouts, 5xx, dropped connections): order creation must then look the order up by its
`client_order_id` before sending anything again. Messages never contain credentials.
"""

from __future__ import annotations

from xcoin_trading.errors import XcoinError


class ExchangeError(XcoinError):
    """Any failure talking to the exchange."""

    ambiguous = False

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None):
        self.message = message
        self.status = status
        self.endpoint = endpoint
        where = f" ({endpoint})" if endpoint else ""
        code = f"{status} " if status is not None else ""
        super().__init__(f"{code}{message}{where}")


class AuthenticationError(ExchangeError):
    """Wrong key or signature, or the timestamp is outside the exchange's window."""


class InsufficientFunds(ExchangeError):
    """Free balance (or margin) does not cover the order."""


class BelowMinimumError(ExchangeError):
    """The exchange said the order is too small (minimum quantity or order value)."""


class OrderNotFound(ExchangeError):
    """No order with that id / client_order_id on this account."""


class InvalidRequest(ExchangeError):
    """The exchange refused the request as malformed or not allowed in this state."""


class DuplicateOrder(InvalidRequest):
    """An order with this client_order_id already exists on the account."""


class RateLimited(ExchangeError):
    """HTTP 429; `retry_after` is the server's Retry-After in seconds when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(ExchangeError):
    """5xx: the request may or may not have been executed."""

    ambiguous = True


class ExchangeTimeout(ExchangeError):
    """No answer in time (or the connection dropped after sending): outcome unknown."""

    ambiguous = True


class ExchangeUnavailable(ExchangeError):
    """Could not connect at all: the request was never sent, so it is safe to send again."""


_BELOW_MINIMUM_HINTS = (
    "minimum order value",
    "quantity too low",
    "quantity should be greater",
    "below minimum",
)


def error_from_body(
    status: int, body: object, *, retry_after: float | None = None, endpoint: str | None = None
) -> ExchangeError:
    """Map an HTTP status plus CoinDCX error body to the matching typed error."""
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or "")
    elif isinstance(body, str):
        message = body[:300]
    message = message or f"HTTP {status}"
    low = message.lower()
    kw = {"status": status, "endpoint": endpoint}
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    if status == 401 or "invalid credentials" in low or "unauthori" in low:
        return AuthenticationError(message, **kw)
    if "insufficient" in low:
        return InsufficientFunds(message, **kw)
    if any(h in low for h in _BELOW_MINIMUM_HINTS):
        return BelowMinimumError(message, **kw)
    if status == 404 or "not found" in low or low == "not_found":
        return OrderNotFound(message, **kw)
    if "client order id" in low and ("exist" in low or "duplicate" in low):
        return DuplicateOrder(message, **kw)
    return InvalidRequest(message, **kw)
