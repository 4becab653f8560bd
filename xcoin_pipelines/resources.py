"""Resources wrapping xcoin_trading objects. Secrets stay in the environment, never in run config."""

from __future__ import annotations

from typing import Any

import dagster as dg

from xcoin_trading.config import Settings, get_settings


class XcoinSettingsResource(dg.ConfigurableResource):
    """Gives ops and assets the same `Settings` every command reads (from the environment)."""

    def get(self) -> Settings:
        return get_settings()


def build_resources() -> dict[str, Any]:
    return {"xcoin": XcoinSettingsResource()}
