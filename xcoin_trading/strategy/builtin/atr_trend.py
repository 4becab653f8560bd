"""ATR trend following: EMA crossover entries with stop loss and take profit placed at ATR
multiples from the entry (volatility-scaled risk, as the subscription's SL/TP multiples)."""

from __future__ import annotations

import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import build_signals, check_mode, check_positive_int
from xcoin_trading.strategy.indicators import atr, crossed_above, crossed_below, ema

DEFAULT_PARAMS = {
    "fast": 20,
    "slow": 50,
    "atr_period": 14,
    "sl_atr": 2.0,
    "tp_atr": 3.0,
    "mode": "long_short",
}


def check_params(params: dict) -> None:
    check_positive_int(params, "fast", "slow", "atr_period")
    if params["fast"] >= params["slow"]:
        raise ValidationError("params.fast", f"must be below slow ({params['slow']}), got {params['fast']}")
    for name in ("sl_atr", "tp_atr"):
        if params[name] <= 0:
            raise ValidationError(f"params.{name}", f"must be > 0, got {params[name]}")
    check_mode(params)


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    fast, slow, a, close = pl.col("_fast"), pl.col("_slow"), pl.col("_atr"), pl.col("close")
    sl, tp = params["sl_atr"], params["tp_atr"]
    longs = (close - sl * a, close + tp * a)
    shorts = (close + sl * a, close - tp * a)
    # No entry where ATR is too small to put the levels on the right side of the close, or where
    # the stop (long) / take profit (short) would be at or below zero after a wild candle.
    sized = a > close * 1e-9
    return build_signals(
        candles,
        {
            "_fast": ema("close", params["fast"]),
            "_slow": ema("close", params["slow"]),
            "_atr": atr(params["atr_period"]),
        },
        crossed_above(fast, slow) & sized & (longs[0] > 0),
        crossed_below(fast, slow) & sized & (shorts[1] > 0),
        pl.lit(False),
        params["mode"],
        longs,
        shorts,
    )
