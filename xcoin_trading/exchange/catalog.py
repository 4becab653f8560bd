"""The exchange's market list: every spot market (`/exchange/v1/markets_details`) and futures
instrument (`active_instruments` + `instrument` per pair), with precision, step, minimums and status.

Stored as one JSON file in the lake, `markets/markets.json`, with the time it was fetched and the
exchange it came from (written to a temporary file and renamed: readers never see half a list).
`xcoin markets refresh` and the Dagster asset `market_data/markets` (daily schedule) write it.
Before the first refresh the bundled list applies (`exchange/fixtures/coindcx_markets.json`, the
simulator's markets). Lookups are cached per file version.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import BUNDLED_FUTURES, BUNDLED_SPOT, Market
from xcoin_trading.timeframes import utcnow

BUNDLED_SOURCE = "bundled list (run `xcoin markets refresh`)"


@dataclass(frozen=True)
class MarketCatalog:
    spot: dict[str, Market]  # by symbol (BTCUSDT)
    futures: dict[str, Market]  # by pair (B-BTC_USDT)
    fetched_at: datetime | None
    source: str

    @classmethod
    def of(
        cls, spot: list[Market], futures: list[Market], fetched_at: datetime | None, source: str
    ) -> MarketCatalog:
        by_symbol: dict[str, Market] = {}
        for m in spot:  # CoinDCX may list a symbol twice (ecodes): the active one, Binance-routed first
            current = by_symbol.get(m.symbol)
            if current is None or _rank(m) < _rank(current):
                by_symbol[m.symbol] = m
        return cls(by_symbol, {m.pair: m for m in futures}, fetched_at, source)

    def find(self, symbol: str) -> Market:
        market = self.spot.get(symbol) or self.futures.get(symbol)
        if market is None:
            raise ValidationError("symbol", f"is not a known market: {symbol!r} ({self.describe()})")
        return market

    def tradable(self, symbol: str) -> Market:
        market = self.find(symbol)
        if market.status != "active":
            raise ValidationError(
                "symbol",
                f"{symbol} is not tradable on CoinDCX: its status is {market.status!r} ({self.describe()})",
            )
        return market

    def describe(self) -> str:
        when = (
            f"fetched {self.fetched_at:%Y-%m-%d %H:%M} UTC from {self.source}"
            if self.fetched_at
            else self.source
        )
        return f"{len(self.spot)} spot markets and {len(self.futures)} futures instruments, {when}"

    def to_json(self) -> dict[str, Any]:
        return {
            "fetched_at": self.fetched_at.isoformat() if self.fetched_at else None,
            "source": self.source,
            "spot": [m.to_json() for m in self.spot.values()],
            "futures": [m.to_json() for m in self.futures.values()],
        }


def _rank(m: Market) -> tuple[int, int]:
    return (m.status != "active", not m.pair.startswith("B-"))


BUNDLED_CATALOG = MarketCatalog.of(BUNDLED_SPOT, BUNDLED_FUTURES, None, BUNDLED_SOURCE)


def catalog_path(settings: Settings) -> Path:
    return settings.lake_dir / "markets" / "markets.json"


_cache: dict[Path, tuple[int, MarketCatalog]] = {}
_cache_lock = threading.Lock()


def load_catalog(settings: Settings | None = None) -> MarketCatalog:
    """The stored market list, or the bundled one when none was fetched yet."""
    path = catalog_path(settings or get_settings())
    try:
        version = path.stat().st_mtime_ns
    except FileNotFoundError:
        return BUNDLED_CATALOG
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
    data = json.loads(path.read_text())
    catalog = MarketCatalog.of(
        [Market.from_json(r) for r in data["spot"]],
        [Market.from_json(r) for r in data["futures"]],
        datetime.fromisoformat(data["fetched_at"]) if data.get("fetched_at") else None,
        data.get("source") or str(path),
    )
    with _cache_lock:
        _cache[path] = (version, catalog)
    return catalog


def fetch_catalog(client: Any, source: str) -> MarketCatalog:
    """Every spot market and futures instrument the exchange lists, as of now."""
    spot = client.markets_details()
    futures = [client.futures_instrument(pair) for pair in client.futures_active_instruments()]
    return MarketCatalog.of(spot, futures, utcnow(), source)


def store_catalog(catalog: MarketCatalog, settings: Settings | None = None) -> Path:
    path = catalog_path(settings or get_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(catalog.to_json(), indent=1))
    os.replace(tmp, path)
    return path


def refresh_markets(client: Any, source: str, settings: Settings | None = None) -> MarketCatalog:
    """Fetch and store the market list; an exchange error leaves the stored list as it was."""
    catalog = fetch_catalog(client, source)
    if not catalog.spot:
        from xcoin_trading.exchange.errors import ExchangeError

        raise ExchangeError(f"{source} listed no spot markets; the stored list is kept")
    store_catalog(catalog, settings)
    return catalog


def default_market(symbol: str) -> Market:
    """Metadata of a spot symbol or futures pair from the stored market list (`xcoin markets
    refresh`), or the bundled one before the first refresh; any status (open trades on a market
    that went inactive still need it). Use `tradable_market` for something new."""
    return load_catalog().find(symbol)


def tradable_market(symbol: str) -> Market:
    """As `default_market`, refusing a market that is not active, naming it and its status."""
    return load_catalog().tradable(symbol)
