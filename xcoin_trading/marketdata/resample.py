"""Higher resolutions built from lower ones (1m → 5m … 1d), as the exchange builds its candles.

Per UTC-aligned bucket: open = first, high = max, low = min, close = last, volume = sum. A bucket
with fewer source candles than its length (an exchange outage) is kept, as the exchange keeps it;
a bucket that has not closed yet (`closed_before_ms`) is dropped so a partial day never stores a
candle that will still change.
"""

from __future__ import annotations

import polars as pl

from xcoin_trading.candles import CANDLE_COLUMNS, CANDLE_SCHEMA
from xcoin_trading.errors import ValidationError
from xcoin_trading.timeframes import DAY_MS, resolution_ms


def ohlcv_aggregation() -> tuple[pl.Expr, ...]:
    """Candles of a time-sorted group as one: first open, highest high, lowest low, last close, volume."""
    return (
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
    )


def resample(
    candles: pl.DataFrame,
    resolution: str,
    *,
    source_resolution: str = "1m",
    closed_before_ms: int | None = None,
) -> pl.DataFrame:
    """Aggregate sorted, unique `candles` at `source_resolution` into `resolution` candles."""
    step, src = resolution_ms(resolution), resolution_ms(source_resolution)
    if step < src or step % src or DAY_MS % step:
        raise ValidationError(
            "resolution",
            f"cannot build {resolution} candles from {source_resolution}: it must be a multiple of "
            f"{source_resolution} that divides a day",
        )
    frame = candles.select(CANDLE_COLUMNS).sort("open_time")
    out = (
        frame.group_by(
            (pl.col("open_time") - pl.col("open_time") % step).alias("bucket"), maintain_order=True
        )
        .agg(*ohlcv_aggregation())
        .rename({"bucket": "open_time"})
        .select(CANDLE_COLUMNS)
        .cast(pl.Schema(CANDLE_SCHEMA))
    )
    if closed_before_ms is not None:
        out = out.filter(pl.col("open_time") + step <= closed_before_ms)
    return out
