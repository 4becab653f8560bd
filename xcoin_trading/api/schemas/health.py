"""Body of the health endpoint."""

from __future__ import annotations

from typing import Literal

from xcoin_trading.api.schemas.base import Response


class CheckOut(Response):
    status: Literal["ok", "error", "not_configured"]
    latency_ms: float | None = None
    detail: str | None = None


class HealthOut(Response):
    status: Literal["ok", "degraded", "error"]
    checks: dict[str, CheckOut]
