"""Pieces the built-ins share: turning entry/exit conditions into the signal frame."""

from __future__ import annotations

import numpy as np
import polars as pl

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.contract import ACTION_DTYPE

MODES = ("long_short", "long_only")


def check_mode(params: dict) -> None:
    if params["mode"] not in MODES:
        raise ValidationError("params.mode", f"must be one of {MODES}, got {params['mode']!r}")


def check_fraction(params: dict, name: str, upper: float = 1.0) -> None:
    value = params[name]
    if not 0 < value < upper:
        raise ValidationError(f"params.{name}", f"must be in (0, {upper}), got {value}")


def check_positive_int(params: dict, *names: str) -> None:
    for name in names:
        if params[name] < 1:
            raise ValidationError(f"params.{name}", f"must be >= 1, got {params[name]}")


def build_signals(
    candles: pl.DataFrame,
    indicators: dict[str, pl.Expr],
    go_long: pl.Expr,
    go_short: pl.Expr,
    exit_: pl.Expr,
    mode: str,
    long_levels: tuple[pl.Expr, pl.Expr],
    short_levels: tuple[pl.Expr, pl.Expr],
) -> pl.DataFrame:
    """The signal frame, in stages: indicators become columns first (so conditions reading
    them do not recompute rolling windows), then the conditions, then action and levels.
    In long_only mode a short signal exits."""
    if mode == "long_only":
        action = (
            pl.when("_long")
            .then(pl.lit("LONG"))
            .when(pl.col("_short") | pl.col("_exit"))
            .then(pl.lit("EXIT"))
        )
    else:
        action = (
            pl.when("_long")
            .then(pl.lit("LONG"))
            .when("_short")
            .then(pl.lit("SHORT"))
            .when("_exit")
            .then(pl.lit("EXIT"))
        )
    action = action.otherwise(pl.lit("HOLD")).cast(ACTION_DTYPE).alias("action")
    is_long, is_short = pl.col("action") == "LONG", pl.col("action") == "SHORT"
    stop = pl.when(is_long).then(long_levels[0]).when(is_short).then(short_levels[0]).otherwise(None)
    take = pl.when(is_long).then(long_levels[1]).when(is_short).then(short_levels[1]).otherwise(None)
    return (
        candles.lazy()
        .with_columns(**indicators)
        .with_columns(_long=go_long, _short=go_short, _exit=exit_)
        .with_columns(action)
        .select(
            "action", stop.cast(pl.Float64).alias("stop_loss"), take.cast(pl.Float64).alias("take_profit")
        )
        .collect()
    )


def pct_levels(sl_pct: float, tp_pct: float) -> tuple[tuple[pl.Expr, pl.Expr], tuple[pl.Expr, pl.Expr]]:
    close = pl.col("close")
    return (close * (1 - sl_pct), close * (1 + tp_pct)), (close * (1 + sl_pct), close * (1 - tp_pct))


def frame_from_codes(codes: np.ndarray, rows: np.ndarray, stop: np.ndarray, take: np.ndarray) -> pl.DataFrame:
    """The signal frame from int codes (HOLD=0, LONG=1, SHORT=2, EXIT=3) and the levels of the
    entry `rows` (NaN: none); every other row's levels are null."""

    def lit(action: str) -> pl.Expr:
        return pl.lit(action, dtype=ACTION_DTYPE)

    def levels(name: str, values: np.ndarray) -> pl.Series:
        return (
            pl.repeat(None, codes.shape[0], dtype=pl.Float64, eager=True)
            .alias(name)
            .scatter(rows, pl.Series(values, nan_to_null=True))
        )

    c = pl.col("_code")
    action = pl.when(c == 1).then(lit("LONG")).when(c == 2).then(lit("SHORT")).when(c == 3).then(lit("EXIT"))
    return (
        pl.DataFrame({"_code": codes})
        .select(action.otherwise(lit("HOLD")).alias("action"))
        .with_columns(levels("stop_loss", stop), levels("take_profit", take))
    )
