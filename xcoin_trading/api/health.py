"""`GET /health`: database, Redis (when configured) and exchange reachability. No token needed,
and nothing in the answer names a host, a URL or an exception text."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import JSONResponse

from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.health import CheckOut, HealthOut
from xcoin_trading.config import Settings

router = make_router(["health"], authed=False)


def _timed(check: Callable[[], None], failure: str) -> CheckOut:
    start = time.perf_counter()
    try:
        check()
    except Exception:  # any failure is "not healthy"; the reason stays in our logs
        return CheckOut(status="error", detail=failure)
    return CheckOut(status="ok", latency_ms=round((time.perf_counter() - start) * 1000, 2))


def check_database(settings: Settings) -> CheckOut:
    from xcoin_trading.store.db import get_engine

    def ping() -> None:
        with get_engine(settings).connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return _timed(ping, "database unreachable")


def check_redis(settings: Settings) -> CheckOut:
    url = settings.redis_url
    if not url:
        return CheckOut(status="not_configured", detail="in-process (embedded default)")
    import redis

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()

    return _timed(ping, "redis unreachable")


def check_exchange(settings: Settings) -> CheckOut:
    from xcoin_trading.exchange.client import CoinDCXClient

    def ping() -> None:
        with CoinDCXClient.from_settings(settings, timeout=3.0, read_attempts=1) as client:
            client.markets()

    return _timed(ping, "exchange unreachable")


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "database down"}},
)
def health(request: Request) -> JSONResponse:
    """`ok`: all reachable; `degraded`: the database works but Redis or the exchange does not;
    `error` (503): the database is down."""
    settings = request.app.state.settings
    checks = {
        "database": check_database(settings),
        "redis": check_redis(settings),
        "exchange": check_exchange(settings),
    }
    if checks["database"].status != "ok":
        status, code = "error", 503
    elif any(c.status == "error" for c in checks.values()):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body = HealthOut(status=status, checks=checks)
    return JSONResponse(body.model_dump(mode="json", by_alias=True, exclude_none=False), status_code=code)
