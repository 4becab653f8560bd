"""An uploadable strategy: long when the close crosses above its 20-candle mean, exit when it falls
back below; stop 1 % under the close, take profit 2 % above. Only past candles are used."""

import polars as pl

DEFAULT_PARAMS = {"window": 20, "sl": 0.01, "tp": 0.02}


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    mean = pl.col("close").rolling_mean(params["window"])
    above = pl.col("close") > mean
    crossed_up = above & ~above.shift(1).fill_null(True)
    crossed_down = ~above & above.shift(1).fill_null(False)
    return candles.select(
        pl.when(crossed_up)
        .then(pl.lit("LONG"))
        .when(crossed_down)
        .then(pl.lit("EXIT"))
        .otherwise(pl.lit("HOLD"))
        .alias("action"),
        (pl.col("close") * (1 - params["sl"])).alias("stop_loss"),
        (pl.col("close") * (1 + params["tp"])).alias("take_profit"),
    )
