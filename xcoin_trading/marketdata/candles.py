"""The candle frame every part of the platform exchanges, and the checks on its inputs.

Schema (sorted by `open_time`, one row per candle): `open_time` Int64 UTC epoch ms of the candle
open, `open`, `high`, `low`, `close`, `volume` Float64 (volume in the traded coin).
"""

from __future__ import annotations

import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.timeframes import TRADED_RESOLUTIONS, resolution_ms

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
CANDLE_COLUMNS = ("open_time", *VALUE_COLUMNS)
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "open_time": pl.Int64(),
    **{c: pl.Float64() for c in VALUE_COLUMNS},
}


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def check_symbol(symbol: str) -> str:
    """A market the platform knows (spot `BTCUSDT` or futures `B-BTC_USDT`); raises otherwise."""
    if not isinstance(symbol, str) or not symbol:
        raise ValidationError("symbol", f"must be a market symbol such as BTCUSDT, got {symbol!r}")
    default_market(symbol)
    return symbol


def check_resolution(resolution: str) -> str:
    """A resolution the lake stores (the traded ones); raises naming the allowed values."""
    resolution_ms(resolution)
    if resolution not in TRADED_RESOLUTIONS:
        raise ValidationError(
            "resolution",
            f"must be one of {', '.join(TRADED_RESOLUTIONS)} (stored in the lake), got {resolution!r}",
        )
    return resolution


def to_candle_frame(df: pl.DataFrame, source: str = "candles") -> pl.DataFrame:
    """Cast a frame to the candle schema; raises naming missing or non-numeric columns.

    `open_time` may be epoch ms integers or a (timezone-aware or UTC-naive) datetime column.
    Extra columns are dropped. Rows are not reordered: quality checks must see the input as given.
    """
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValidationError(
            source, f"is missing column(s) {', '.join(missing)}; need {', '.join(CANDLE_COLUMNS)}"
        )
    t = df.schema["open_time"]
    if isinstance(t, pl.Datetime):
        open_time = pl.col("open_time")
        if t.time_zone is not None:
            open_time = open_time.dt.convert_time_zone("UTC")
        open_time = open_time.dt.epoch("ms")
    elif t.is_integer():
        open_time = pl.col("open_time").cast(pl.Int64)
    else:
        raise ValidationError(f"{source}.open_time", f"must be epoch milliseconds or a datetime, got {t}")
    for c in VALUE_COLUMNS:
        if not df.schema[c].is_numeric():
            raise ValidationError(f"{source}.{c}", f"must be numeric, got {df.schema[c]}")
    return df.select(open_time.alias("open_time"), *[pl.col(c).cast(pl.Float64) for c in VALUE_COLUMNS])
