"""Indicator expressions for strategies (polars, vectorised, null during warm-up)."""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

from xcoin_trading.strategy.contract import jit_for


def sma(column: str, n: int) -> pl.Expr:
    return pl.col(column).rolling_mean(window_size=n)


@njit(cache=True, nogil=True)
def _running_mean_nb(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
        if i >= n:
            s -= x[i - n]
        if i >= n - 1:
            out[i] = s / n
    return out


def sma_running_sum(column: str, n: int) -> pl.Expr:
    """SMA as the SMA-SLTP spec's reference computes it (`s += c[i]; s -= c[i-n]`).

    Mathematically equal to `sma`, but crossovers that hinge on a last-bit tie go the same way
    as in the spec's reference, so the reference workload reproduces trade by trade.
    """
    return pl.col(column).map_batches(
        lambda s: pl.Series(jit_for(_running_mean_nb, s.len())(s.to_numpy().astype(np.float64), n)).fill_nan(
            None
        ),
        return_dtype=pl.Float64,
    )


def ema(column: str, n: int) -> pl.Expr:
    return pl.col(column).ewm_mean(span=n, adjust=False, min_samples=n)


def wilder(expr: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing (RMA), as RSI and ATR define it (alpha = 1/n)."""
    return expr.ewm_mean(alpha=1.0 / n, adjust=False, min_samples=n)


def rsi(column: str, n: int) -> pl.Expr:
    delta = pl.col(column).diff()
    gain = wilder(delta.clip(lower_bound=0.0), n)
    loss = wilder((-delta).clip(lower_bound=0.0), n)
    # All-gain windows: RSI 100 (loss 0); flat windows (0/0): neutral 50.
    return pl.when((gain + loss) == 0).then(50.0).otherwise(100.0 * gain / (gain + loss))


def true_range() -> pl.Expr:
    prev_close = pl.col("close").shift(1)
    return pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - prev_close).abs(),
        (pl.col("low") - prev_close).abs(),
    )


def atr(n: int) -> pl.Expr:
    return wilder(true_range(), n)


def _prev(b: pl.Expr | float) -> pl.Expr | float:
    return b.shift(1) if isinstance(b, pl.Expr) else b  # a constant level has no previous value


def crossed_above(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    """a goes from <= b (previous candle) to > b (this candle); null during warm-up is False."""
    return ((a > b) & (a.shift(1) <= _prev(b))).fill_null(False)


def crossed_below(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    return ((a < b) & (a.shift(1) >= _prev(b))).fill_null(False)
