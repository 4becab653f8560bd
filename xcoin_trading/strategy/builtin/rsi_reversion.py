"""RSI mean reversion: long when RSI climbs back above `oversold`, short when it falls back
below `overbought`; exit when RSI crosses `exit_level` (the mean has been reached)."""

from __future__ import annotations

import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import (
    build_signals,
    check_pct_exits,
    check_positive_int,
    pct_levels,
)
from xcoin_trading.strategy.indicators import crossed_above, crossed_below, rsi

DEFAULT_PARAMS = {
    "period": 14,
    "oversold": 30.0,
    "overbought": 70.0,
    "exit_level": 50.0,
    "sl_pct": 0.02,
    "tp_pct": 0.04,
    "mode": "long_short",
}


def check_params(params: dict) -> None:
    check_positive_int(params, "period")
    if not 0 < params["oversold"] < params["exit_level"] < params["overbought"] < 100:
        raise ValidationError(
            "params.oversold",
            "must satisfy 0 < oversold < exit_level < overbought < 100, got "
            f"{params['oversold']}/{params['exit_level']}/{params['overbought']}",
        )
    check_pct_exits(params)


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    r, level = pl.col("_rsi"), float(params["exit_level"])
    return build_signals(
        candles,
        {"_rsi": rsi("close", params["period"])},
        crossed_above(r, float(params["oversold"])),
        crossed_below(r, float(params["overbought"])),
        crossed_above(r, level) | crossed_below(r, level),
        params["mode"],
        *pct_levels(params["sl_pct"], params["tp_pct"]),
    )
