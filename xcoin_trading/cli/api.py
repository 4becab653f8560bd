"""`xcoin api serve`: the REST API under uvicorn."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    @main.group("api")
    def api() -> None:
        """The REST API (FastAPI; OpenAPI document at /openapi.json, docs at /docs)."""

    @api.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
    @click.option(
        "--migrate/--no-migrate", default=True, show_default=True, help="apply database migrations first"
    )
    @click.option(
        "--proxy-headers", is_flag=True, help="trust X-Forwarded-For from 127.0.0.1 (behind a reverse proxy)"
    )
    def serve(host: str, port: int, workers: int, migrate: bool, proxy_headers: bool) -> None:
        """Serve the API until interrupted. Settings come from the environment (docs/configuration.md)."""
        import uvicorn

        from xcoin_trading.api.tokens import jwt_secret
        from xcoin_trading.config import get_settings
        from xcoin_trading.store.db import upgrade

        settings = get_settings()
        jwt_secret(settings)  # fail now, with a clear message, not on the first request
        if migrate:
            upgrade(settings)
        if workers > 1 and not settings.redis_url:
            click.echo("warning: login throttling is per process without XCOIN_REDIS_URL", err=True)
        uvicorn.run(
            "xcoin_trading.api:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=proxy_headers,
            log_level="info",
        )
