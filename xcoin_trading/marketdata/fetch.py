"""Fetch one UTC day of candles from the exchange (or build it from 1m), check it, store it.

The exchange client paginates in 1000-candle windows under its rate limiter and only sorts and
drops exact duplicates, so the checks here see what the exchange really sent. Only closed candles
are kept: for the current day the window ends at the candle still forming, and the day is stored
as partial.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import polars as pl

from xcoin_trading.candles import to_candle_frame
from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.marketdata.candles import check_resolution, check_symbol
from xcoin_trading.marketdata.lake import (
    exchange_source,
    partition_info,
    partition_path,
    read_partition,
    write_partition,
)
from xcoin_trading.marketdata.quality import QualityReport, as_ms, check_candles
from xcoin_trading.marketdata.resample import resample
from xcoin_trading.timeframes import day_bounds_ms, floor_ms, resolution_ms, to_ms, utcnow

Source = Literal["exchange", "resample"]
CANDLES_PER_REQUEST = 1000  # CoinDCX caps a candles page at 1000


class CandleSource(Protocol):
    """What fetching needs from `CoinDCXClient`."""

    def fetch_candles(
        self, symbol_or_pair: str, interval: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame: ...


@dataclass(frozen=True)
class DayWindow:
    day: str
    start_ms: int
    end_ms: int  # exclusive; the day's end, or the open time of the candle still forming
    partial: bool


@dataclass(frozen=True)
class DayIngest:
    symbol: str
    resolution: str
    window: DayWindow
    source: Source
    candles: pl.DataFrame
    report: QualityReport
    path: Path | None  # where it was written; None when the checks refused it
    kind: str = "simulator"  # the lake source recorded on the day (coindcx, simulator, ...)

    @property
    def written(self) -> bool:
        return self.path is not None

    @property
    def requests(self) -> int:
        """Pages asked of the exchange (0 when resampled from the lake)."""
        if self.source != "exchange":
            return 0
        span = self.window.end_ms - self.window.start_ms
        return -(-span // (resolution_ms(self.resolution) * CANDLES_PER_REQUEST))


def day_window(day: str, resolution: str, now_ms: int | None = None) -> DayWindow:
    """The closed-candle window of `day` at `now_ms`; refuses a day with no closed candle yet."""
    lo, hi = day_bounds_ms(day)
    now_ms = to_ms(utcnow()) if now_ms is None else now_ms
    forming = floor_ms(now_ms, resolution)  # open time of the candle not closed yet
    if forming <= lo:
        raise ValidationError("date", f"{day} has no closed {resolution} candle yet")
    end = min(hi, forming)
    return DayWindow(day=day, start_ms=lo, end_ms=end, partial=end < hi)


def fetch_day(
    client: CandleSource, symbol: str, resolution: str, day: str, *, now_ms: int | None = None
) -> tuple[DayWindow, pl.DataFrame]:
    """The exchange's closed candles of one day, unchecked, in the order the client returned them."""
    check_symbol(symbol)
    check_resolution(resolution)
    window = day_window(day, resolution, now_ms)
    frame = client.fetch_candles(symbol, resolution, window.start_ms, window.end_ms)
    return window, to_candle_frame(frame, source="exchange candles")


def _from_1m(
    symbol: str, resolution: str, day: str, settings: Settings | None, now_ms: int | None
) -> tuple[DayWindow, pl.DataFrame, str]:
    if resolution == "1m":
        raise ValidationError("source", "resample builds 5m and up from 1m; fetch 1m from the exchange")
    path = partition_path(symbol, "1m", day, settings)
    if not path.exists():
        raise NotFound(
            f"cannot resample {symbol} {resolution} for {day}: the lake has no 1m candles for that day"
        )
    info = partition_info(path)
    minutes = read_partition(symbol, "1m", day, settings)
    window = day_window(day, resolution, now_ms)
    lo, hi = day_bounds_ms(day)
    if info.partial:
        until = info.complete_until_ms or (
            as_ms(minutes["open_time"].max()) + 60_000 if minutes.height else lo
        )
        end = min(window.end_ms, floor_ms(until, resolution))
        window = DayWindow(day=day, start_ms=lo, end_ms=max(lo, end), partial=True)
    return window, resample(minutes, resolution, closed_before_ms=window.end_ms), info.source


def ingest_day(
    symbol: str,
    resolution: str,
    day: str,
    *,
    client: CandleSource | None = None,
    source: Source = "exchange",
    settings: Settings | None = None,
    now_ms: int | None = None,
) -> DayIngest:
    """Fetch (or resample) one day, run the checks, and replace the lake's day only if they pass."""
    check_symbol(symbol)
    check_resolution(resolution)
    if source == "exchange":
        if client is None:
            raise ValidationError("client", "is required to fetch from the exchange")
        window, candles = fetch_day(client, symbol, resolution, day, now_ms=now_ms)
        kind, origin = client_source(client)
    elif source == "resample":
        window, candles, kind = _from_1m(symbol, resolution, day, settings, now_ms)
        origin = "resampled from the lake's 1m day"
    else:
        raise ValidationError("source", f"must be 'exchange' or 'resample', got {source!r}")
    return store_checked_day(candles, symbol, resolution, window, source, settings, kind=kind, origin=origin)


def client_source(client: Any) -> tuple[str, str]:
    """(lake source, origin) of candles fetched through `client`: CoinDCX or a simulator."""
    url = str(getattr(client, "public_url", "") or "")
    return exchange_source(url), url


def store_checked_day(
    candles: pl.DataFrame,
    symbol: str,
    resolution: str,
    window: DayWindow,
    source: Source,
    settings: Settings | None = None,
    *,
    kind: str = "simulator",
    origin: str | None = None,
) -> DayIngest:
    """Check one day's candles and replace the lake's day only if no check fails. `kind` is the
    lake source (`coindcx`, `simulator`, ...) recorded on the day."""
    until = None
    if window.partial:
        # The exchange may publish the newest closed candle a moment late: a partial day is
        # complete up to its newest candle, and the next top-up extends it.
        newest = candles["open_time"].max() if candles.height else None
        until = (
            min(window.end_ms, as_ms(newest) + resolution_ms(resolution))
            if newest is not None
            else window.end_ms
        )
    report = check_candles(candles, resolution, window.day, complete_until_ms=until)
    path = None
    if report.ok:
        path = write_partition(
            candles,
            symbol,
            resolution,
            window.day,
            partial=window.partial,
            source=kind,
            complete_until_ms=until,
            settings=settings,
            origin=origin,
        )
    return DayIngest(symbol, resolution, window, source, candles, report, path, kind)


@contextmanager
def exchange_client(
    settings: Settings | None = None, *, api_url: str | None = None, public_url: str | None = None
) -> Iterator[Any]:
    """A `CoinDCXClient` for candles: explicit URLs, else the settings' (COINDCX_API_URL), else the
    in-process simulator when nothing is configured (embedded default)."""
    from xcoin_trading.exchange.client import CoinDCXClient
    from xcoin_trading.exchange.embedded import exchange_urls

    api, public = exchange_urls(settings or get_settings(), api_url=api_url, public_url=public_url)
    with CoinDCXClient(api, public) as client:
        yield client
