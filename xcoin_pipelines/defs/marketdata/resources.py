"""The exchange the candle assets fetch from (resource key `market_data_exchange`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from xcoin_trading.config import Settings
    from xcoin_trading.exchange.client import CoinDCXClient


class MarketDataExchange(dg.ConfigurableResource):
    """CoinDCX public market data. Empty URLs mean: `COINDCX_API_URL`/`COINDCX_PUBLIC_URL` from the
    environment, and with those unset too (embedded mode) a simulator started in this process on
    first use. Candles need no API key, so none is configured here."""

    api_url: str | None = Field(
        default=None, description="Override of COINDCX_API_URL (tests point it at a simulator)."
    )
    public_url: str | None = Field(
        default=None, description="Override of COINDCX_PUBLIC_URL; defaults to api_url."
    )

    simulator_clock: bool = Field(
        default=False,
        description="Take 'now' (which candles have closed, is today partial) from the simulator's clock "
        "instead of the wall clock: for replays of past data.",
    )

    def now_ms(self, settings: Settings) -> int | None:
        """The exchange's 'now' when it runs on a simulated clock; None means the wall clock."""
        if not self.simulator_clock:
            return None
        from xcoin_trading.exchange.simulator.server import SimulatorAdmin

        with SimulatorAdmin(
            self.public_url or self.api_url or settings.public_url or settings.api_url
        ) as admin:
            return admin.now_ms()

    @contextmanager
    def client(self, settings: Settings) -> Iterator[CoinDCXClient]:
        from xcoin_trading.marketdata.fetch import exchange_client

        with exchange_client(settings, api_url=self.api_url, public_url=self.public_url) as client:
            yield client


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"market_data_exchange": MarketDataExchange()})
