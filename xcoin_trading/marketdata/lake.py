"""The Parquet candle lake and its read API.

Layout: `<lake_dir>/candles/symbol=S/resolution=R/date=YYYY-MM-DD.parquet`, one file per UTC day,
candle schema (see `xcoin_trading/candles.py`), sorted and unique. A file is written to a hidden temporary name in
the same folder and renamed over the old one, so readers see the old day or the new day, never half.
A day still in progress is marked partial in the file's own key-value metadata (`xcoin.partial`),
so the flag and the data can never disagree.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from xcoin_trading.candles import CANDLE_COLUMNS, CANDLE_SCHEMA
from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.marketdata.candles import check_resolution, check_symbol
from xcoin_trading.timeframes import day_bounds_ms, from_ms, to_ms, utcnow

META_PARTIAL = "xcoin.partial"
META_SOURCE = "xcoin.source"
META_COMPLETE_UNTIL = "xcoin.complete_until_ms"
META_WRITTEN_AT = "xcoin.written_at"
META_ORIGIN = "xcoin.origin"  # the file name or exchange URL behind the source
# Where a day's candles came from. `simulator` days are synthetic: never mistake them for history.
SOURCES = ("binance", "coindcx", "file", "simulator")


def exchange_source(public_url: str) -> str:
    """`coindcx` for CoinDCX's own hosts; anything else is treated as a simulator (a synthetic
    feed must never pass for real history, so the unsure case is labelled the safe way)."""
    from urllib.parse import urlsplit

    host = (urlsplit(public_url).hostname or "").lower()
    return "coindcx" if host == "coindcx.com" or host.endswith(".coindcx.com") else "simulator"


def source_label(source: str) -> str:
    """How summaries show a day's source: simulator days stand out."""
    return "SIMULATOR (synthetic)" if source == "simulator" else source


def candles_root(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).lake_dir / "candles"


def partition_path(symbol: str, resolution: str, day: str, settings: Settings | None = None) -> Path:
    return candles_root(settings) / f"symbol={symbol}" / f"resolution={resolution}" / f"date={day}.parquet"


def day_of(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d")


def days_between(start_ms: int, end_ms: int) -> list[str]:
    """UTC days touched by [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return []
    first = from_ms(start_ms).date()
    last = from_ms(end_ms - 1).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def compress_days(days: list[str]) -> str:
    """`2024-01-01, 2024-01-03..2024-01-05` for a sorted list of days."""
    runs: list[list[str]] = []
    for d in days:
        if runs and (datetime.fromisoformat(d) - datetime.fromisoformat(runs[-1][-1])).days == 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


@dataclass(frozen=True)
class PartitionInfo:
    symbol: str
    resolution: str
    day: str
    path: Path
    partial: bool
    source: str
    complete_until_ms: int | None
    origin: str = ""


def write_partition(
    df: pl.DataFrame,
    symbol: str,
    resolution: str,
    day: str,
    *,
    partial: bool = False,
    source: str = "file",
    complete_until_ms: int | None = None,
    settings: Settings | None = None,
    origin: str | None = None,
) -> Path:
    """Replace one day atomically. `df` must already have passed the quality checks.

    Rows are sorted; the candle schema, uniqueness and the day bounds are enforced here too,
    because a wrong file in the lake would mislead every backtest that reads it.
    """
    check_symbol(symbol)
    check_resolution(resolution)
    if source not in SOURCES:
        raise ValidationError("source", f"must be one of {', '.join(SOURCES)}, got {source!r}")
    lo, hi = day_bounds_ms(day)
    frame = df.select(CANDLE_COLUMNS).cast(pl.Schema(CANDLE_SCHEMA)).sort("open_time")
    if frame.height and (frame["open_time"][0] < lo or frame["open_time"][-1] >= hi):
        raise ValidationError("candles", f"must all open within {day} to be stored in its partition")
    if frame["open_time"].is_duplicated().any():
        raise ValidationError(
            "candles", f"contain duplicate open times; refusing to store {symbol} {resolution} {day}"
        )
    path = partition_path(symbol, resolution, day, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    metadata = {
        META_PARTIAL: "true" if partial else "false",
        META_SOURCE: source,
        META_WRITTEN_AT: utcnow().isoformat(),
    }
    if complete_until_ms is not None:
        metadata[META_COMPLETE_UNTIL] = str(complete_until_ms)
    if origin:
        metadata[META_ORIGIN] = origin
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True, metadata=metadata)
        with open(tmp, "rb") as fh:  # durable before it becomes visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def partition_info(path: Path) -> PartitionInfo:
    meta = pl.read_parquet_metadata(path)
    symbol = path.parent.parent.name.removeprefix("symbol=")
    resolution = path.parent.name.removeprefix("resolution=")
    day = path.name.removeprefix("date=").removesuffix(".parquet")
    until = meta.get(META_COMPLETE_UNTIL)
    return PartitionInfo(
        symbol=symbol,
        resolution=resolution,
        day=day,
        path=path,
        partial=meta.get(META_PARTIAL) == "true",
        source=meta.get(META_SOURCE, "unknown"),
        complete_until_ms=int(until) if until else None,
        origin=meta.get(META_ORIGIN, ""),
    )


def read_partition(symbol: str, resolution: str, day: str, settings: Settings | None = None) -> pl.DataFrame:
    path = partition_path(symbol, resolution, day, settings)
    if not path.exists():
        raise NotFound(f"no candles in the lake for {symbol} {resolution} on {day}")
    return pl.read_parquet(path)


def list_days(symbol: str, resolution: str, settings: Settings | None = None) -> list[str]:
    folder = candles_root(settings) / f"symbol={symbol}" / f"resolution={resolution}"
    return sorted(
        p.name.removeprefix("date=").removesuffix(".parquet") for p in folder.glob("date=*.parquet")
    )


def list_partitions(settings: Settings | None = None) -> list[PartitionInfo]:
    """Every stored day with its partial flag (reads only the Parquet footers)."""
    return [
        partition_info(p) for p in sorted(candles_root(settings).glob("symbol=*/resolution=*/date=*.parquet"))
    ]


def lake_summary(settings: Settings | None = None) -> pl.DataFrame:
    """One row per symbol × resolution: days stored, partial days, first and last day, sources."""
    rows = [
        {
            "symbol": i.symbol,
            "resolution": i.resolution,
            "day": i.day,
            "partial": i.partial,
            "source": i.source,
        }
        for i in list_partitions(settings)
    ]
    if not rows:
        return pl.DataFrame(
            schema={
                "symbol": pl.String,
                "resolution": pl.String,
                "days": pl.UInt32,
                "partial_days": pl.UInt32,
                "first_day": pl.String,
                "last_day": pl.String,
                "sources": pl.String,
                "simulated_days": pl.UInt32,
            }
        )
    return (
        pl.DataFrame(rows)
        .group_by("symbol", "resolution")
        .agg(
            days=pl.len(),
            partial_days=pl.col("partial").sum().cast(pl.UInt32),
            first_day=pl.col("day").min(),
            last_day=pl.col("day").max(),
            sources=pl.col("source").unique().sort().str.join("+"),
            simulated_days=(pl.col("source") == "simulator").sum().cast(pl.UInt32),
        )
        .sort("symbol", "resolution")
    )


def _utc_ms(name: str, value: datetime) -> int:
    if not isinstance(value, datetime):
        raise ValidationError(name, f"must be a timezone-aware UTC datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValidationError(name, f"must be timezone-aware UTC, got naive {value.isoformat()}")
    return to_ms(value.astimezone(UTC))


def load_candles(
    symbol: str,
    resolution: str,
    start: datetime,
    end: datetime,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Candles of `symbol` at `resolution` with open time in [start, end), read from the lake.

    Returns `open_time` (Int64, UTC epoch ms) and `open, high, low, close, volume` (Float64), sorted
    and unique. Gaps the exchange itself had stay gaps (nothing is filled in). Raises `NotFound`
    naming every day the lake lacks, and `ValidationError` for an unknown symbol or resolution, a
    naive datetime or an empty range. A partial (current) day is returned as far as it has been
    topped up.
    """
    check_symbol(symbol)
    check_resolution(resolution)
    start_ms, end_ms = _utc_ms("start", start), _utc_ms("end", end)
    if end_ms <= start_ms:
        raise ValidationError("end", f"must be after start ({start.isoformat()}), got {end.isoformat()}")
    days = days_between(start_ms, end_ms)
    paths = [partition_path(symbol, resolution, d, settings) for d in days]
    missing = [d for d, p in zip(days, paths, strict=True) if not p.exists()]
    if missing:
        raise NotFound(
            f"the lake has no {symbol} {resolution} candles for {len(missing)} day(s): {compress_days(missing)} "
            f"(import a file with `xcoin data import` or backfill with `xcoin data backfill`)"
        )
    return (
        pl.scan_parquet(paths)
        .select(CANDLE_COLUMNS)
        .filter((pl.col("open_time") >= start_ms) & (pl.col("open_time") < end_ms))
        .collect()
        .cast(pl.Schema(CANDLE_SCHEMA))
        .unique(subset="open_time", keep="last")
        .sort("open_time")
    )


def day_range(start_day: str, end_day: str) -> list[str]:
    """Inclusive list of UTC days from `start_day` to `end_day` (YYYY-MM-DD)."""
    lo, _ = day_bounds_ms(start_day)
    _, hi = day_bounds_ms(end_day)
    if hi <= lo:
        raise ValidationError("end", f"must not be before start {start_day}, got {end_day}")
    return days_between(lo, hi)
