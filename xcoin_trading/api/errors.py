"""One error body everywhere: `{"error": "<field> <reason>"}` (plus `details` for several fields).

Domain errors map to statuses here, so routes stay thin. Anything unexpected becomes a 500 with a
generic message: the exception (which may hold request data) is logged, never returned.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from xcoin_trading.api.ratelimit import TooManyAttempts
from xcoin_trading.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationError,
    XcoinError,
)
from xcoin_trading.exchange.errors import AuthenticationError, ExchangeError

MAX_MEMBERS = 2_000  # object members in one JSON body: far above any request, far below a flood of keys
TOO_MANY_MEMBERS = f"has more than {MAX_MEMBERS} object members"  # the body parser's error, reported

log = logging.getLogger(__name__)


class NotAvailableYet(XcoinError):
    """A capability another part of the platform has not shipped yet (501)."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not available yet")


class AnalyticsNotBuilt(XcoinError):
    """The analytics warehouse has not been built yet (503)."""

    def __init__(self) -> None:
        super().__init__("P&L analytics are not built yet: they appear after the analytics job has run")


class UpstreamUnavailable(XcoinError):
    """An outside service (exchange, OAuth provider) failed or could not be reached (502)."""


def error_response(
    status: int, message: str, details: list[str] | None = None, **headers: str
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers or None)


MAX_DETAILS = 20  # a body with thousands of mistakes gets the first few, not a megabyte of errors
# Constraint → what the user is told when a parallel request won the race for it.
CONSTRAINT_MESSAGES = {
    "uq_users_email": "email is already registered",
    "uq_users_oauth_provider_oauth_id": "this sign-in is already linked to an account",
    "uq_strategies_code": "strategy code is not available; choose another",
    "uq_subscriptions_active_user_strategy": "already subscribed to this strategy",
    "uq_broker_credentials_active_user_broker": "API keys were replaced by a parallel request; retry",
    "ck_strategies_subscriber_count_non_negative": "the subscription changed in a parallel request; retry",
}
# Postgres SQLSTATEs a parallel request causes (deadlock, serialization failure, lock timeout).
CONCURRENCY_CODES = {"40P01", "40001", "55P03"}


def _constraint(exc: DBAPIError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return name
    text = str(exc.orig)
    return next((n for n in CONSTRAINT_MESSAGES if n in text), None)


_TYPE_TAGS = {"str", "int", "float", "bool", "decimal", "none", "list", "dict", "literal", "date", "datetime"}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic adds union branches and validator names to loc ("str", "function-after[...]"): drop them
    parts = [p for p in parts if p not in _TYPE_TAGS and "[" not in p and not p.startswith("constrained-")]
    return ".".join(parts) or str(loc[0] if loc else "body")


def _describe(err: dict[str, Any]) -> str:
    field = _field_name(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return f"{field} is not a known field"
    if kind == "json_invalid":
        if TOO_MANY_MEMBERS in str((err.get("ctx") or {}).get("error", "")):
            return f"body {TOO_MANY_MEMBERS}"
        return "body is not valid JSON"
    message = str(err.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    for prefix, plain in (
        ("Input should be", "must be"),
        ("Input should", "must"),
        ("String should", "must"),
    ):
        if message.startswith(prefix):
            message = plain + message[len(prefix) :]
    return f"{field} {message[0].lower() + message[1:] if message else 'is invalid'}"


# First match wins, so a subclass must stand before its base.
_STATUS_BY_ERROR: tuple[tuple[type[Exception] | types.UnionType, int], ...] = (
    (ValidationError, 422),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (Unauthorized, 401),
    (TooManyAttempts, 429),
    (NotAvailableYet, 501),
    (AnalyticsNotBuilt, 503),
    (AuthenticationError, 400),  # the user's exchange keys were refused: their input, not our outage
    (ExchangeError | UpstreamUnavailable, 502),
)


def _status_for(exc: XcoinError) -> int:
    return next((status for kind, status in _STATUS_BY_ERROR if isinstance(exc, kind)), 500)


def install(app: FastAPI) -> None:
    @app.exception_handler(XcoinError)
    async def domain_error(request: Request, exc: XcoinError) -> JSONResponse:
        status = _status_for(exc)
        if status == 500:  # ConfigError, VaultError: operator problems, not the user's
            log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
            return error_response(500, "internal error")
        headers: dict[str, str] = {}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        message = str(exc)
        if isinstance(exc, ValidationError):  # the services name fields in snake_case; the wire is camelCase
            message = f"{to_camel(exc.field)} {exc.reason}"
        if isinstance(exc, AuthenticationError):
            message = "the exchange rejected these API keys"
        return error_response(status, message, None, **headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [_describe(e) for e in errors[:MAX_DETAILS]]
        if len(errors) > MAX_DETAILS:
            details.append(f"... and {len(errors) - MAX_DETAILS} more problems")
        return error_response(422, details[0] if details else "request is invalid", details)

    @app.exception_handler(IntegrityError)
    async def constraint_violated(request: Request, exc: IntegrityError) -> JSONResponse:
        """A unique or check constraint refused a write a parallel request made first: 409, not 500."""
        name = _constraint(exc)
        log.info("constraint %s refused %s %s", name, request.method, request.url.path)
        return error_response(409, CONSTRAINT_MESSAGES.get(name or "", "clashes with the current state"))

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if getattr(exc.orig, "pgcode", None) in CONCURRENCY_CODES:
            log.warning("concurrency conflict on %s %s", request.method, request.url.path)
            return error_response(409, "clashed with a parallel change; retry")
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return error_response(500, "internal error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}"
        return error_response(exc.status_code, message, None, **(exc.headers or {}))

    # Anything else: `middleware.LastResort` (a 500 that keeps the connection alive).
