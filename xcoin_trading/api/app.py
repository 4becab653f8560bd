"""`create_app(settings)`: the FastAPI application with its routers, error handlers and state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from fastapi import FastAPI

from xcoin_trading.api import errors
from xcoin_trading.api.deps import STORE_SLOTS
from xcoin_trading.api.middleware import BodyLimit, LastResort
from xcoin_trading.api.oauth import OAuthProvider, providers_from_settings
from xcoin_trading.api.ratelimit import LoginThrottle, MemoryCounter, RedisCounter
from xcoin_trading.api.routing import DecimalRoute
from xcoin_trading.api.tokens import ACCESS_TTL, TokenIssuer
from xcoin_trading.config import Settings, get_settings
from xcoin_trading.live.registry import follow_strategy_changes


def create_app(
    settings: Settings | None = None,
    *,
    oauth_providers: Mapping[str, OAuthProvider] | None = None,
    throttle: LoginThrottle | None = None,
    access_ttl: timedelta = ACCESS_TTL,
) -> FastAPI:
    """The API for `settings` (default: from the environment). Tests pass fakes of outside
    services only (`oauth_providers`); everything else is the real thing."""
    from xcoin_trading.api import auth, backtests, broker, health, positions, strategies, subscriptions

    settings = settings or get_settings()
    follow_strategy_changes()  # strategy edits through the API reach the live registry
    app = FastAPI(
        title="xcoin",
        version="0.1.0",
        description="Multi-tenant algorithmic trading for CoinDCX. Every `/api` route needs "
        '`Authorization: Bearer <token>`; every error is `{"error": "..."}`.',
    )
    app.router.route_class = DecimalRoute
    app.state.settings = settings
    app.state.store_slots = asyncio.Semaphore(STORE_SLOTS)
    app.state.tokens = TokenIssuer.from_settings(settings, access_ttl)
    counter = RedisCounter.from_url(settings.redis_url) if settings.redis_url else MemoryCounter()
    app.state.throttle = throttle or LoginThrottle(counter)
    app.state.oauth = (
        dict(oauth_providers) if oauth_providers is not None else providers_from_settings(settings)
    )
    errors.install(app)
    app.add_middleware(LastResort)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: before anything reads
    for module in (health, auth, broker, strategies, subscriptions, positions, backtests):
        app.include_router(module.router)
    return app
