"""SMA crossover (the SMA-SLTP reference workload): long when the fast SMA crosses above the
slow one, short (or exit, long_only) when it crosses below; SL/TP a fixed percentage of entry.

The SMAs use the spec's running sum so last-bit ties cross exactly as in the reference."""

from __future__ import annotations

import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import (
    build_signals,
    check_fraction,
    check_mode,
    check_positive_int,
    pct_levels,
)
from xcoin_trading.strategy.indicators import crossed_above, crossed_below, sma_running_sum

DEFAULT_PARAMS = {"fast": 20, "slow": 50, "sl_pct": 0.02, "tp_pct": 0.04, "mode": "long_short"}


def check_params(params: dict) -> None:
    check_positive_int(params, "fast", "slow")
    if params["fast"] >= params["slow"]:
        raise ValidationError("params.fast", f"must be below slow ({params['slow']}), got {params['fast']}")
    check_fraction(params, "sl_pct")
    check_fraction(params, "tp_pct", upper=10.0)
    check_mode(params)


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    fast, slow = pl.col("_fast"), pl.col("_slow")
    return build_signals(
        candles,
        {
            "_fast": sma_running_sum("close", params["fast"]),
            "_slow": sma_running_sum("close", params["slow"]),
        },
        crossed_above(fast, slow),
        crossed_below(fast, slow),
        pl.lit(False),
        params["mode"],
        *pct_levels(params["sl_pct"], params["tp_pct"]),
    )
