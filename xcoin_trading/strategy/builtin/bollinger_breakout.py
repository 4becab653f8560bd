"""Bollinger breakout: long when the close breaks above the upper band, short below the lower
band; exit when the close crosses back through the middle band."""

from __future__ import annotations

import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import (
    build_signals,
    check_pct_exits,
    check_positive_int,
    pct_levels,
)
from xcoin_trading.strategy.indicators import crossed_above, crossed_below, sma

DEFAULT_PARAMS = {"period": 20, "num_std": 2.0, "sl_pct": 0.02, "tp_pct": 0.04, "mode": "long_short"}


def check_params(params: dict) -> None:
    check_positive_int(params, "period")
    if params["period"] < 2:
        raise ValidationError(
            "params.period", f"must be >= 2 (a standard deviation needs two closes), got {params['period']}"
        )
    if params["num_std"] <= 0:
        raise ValidationError("params.num_std", f"must be > 0, got {params['num_std']}")
    check_pct_exits(params)


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    n, k = params["period"], params["num_std"]
    close, mid, std = pl.col("close"), pl.col("_mid"), pl.col("_std")
    return build_signals(
        candles,
        {"_mid": sma("close", n), "_std": pl.col("close").rolling_std(window_size=n)},
        crossed_above(close, mid + k * std),
        crossed_below(close, mid - k * std),
        crossed_above(close, mid) | crossed_below(close, mid),
        params["mode"],
        *pct_levels(params["sl_pct"], params["tp_pct"]),
    )
