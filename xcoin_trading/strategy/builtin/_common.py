"""Pieces the built-ins share: turning entry/exit conditions into the signal frame."""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.contract import ACTION_DTYPE, pooled_empty

MODES = ("long_short", "long_only")


def check_mode(params: dict) -> None:
    if params["mode"] not in MODES:
        raise ValidationError("params.mode", f"must be one of {MODES}, got {params['mode']!r}")


def check_fraction(params: dict, name: str, upper: float = 1.0) -> None:
    value = params[name]
    if not 0 < value < upper:
        raise ValidationError(f"params.{name}", f"must be in (0, {upper}), got {value}")


def check_pct_exits(params: dict) -> None:
    """`sl_pct`/`tp_pct` fixed-percentage exits and the mode, as the percentage strategies take them."""
    check_fraction(params, "sl_pct")
    check_fraction(params, "tp_pct", upper=10.0)
    check_mode(params)


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


class SignalBuffers(NamedTuple):
    """A signal frame's memory for a numba pass to fill: action codes (HOLD=0, LONG=1, SHORT=2,
    EXIT=3) and the two level columns as Arrow buffers (values, validity bitmap, bit i = row i)."""

    codes: np.ndarray  # uint8[n]
    stop: np.ndarray  # float64[n]
    stop_valid: np.ndarray  # uint8[ceil(n / 8)]
    take: np.ndarray
    take_valid: np.ndarray


def signal_buffers(n: int) -> SignalBuffers:
    """Uninitialised buffers from Arrow's pool (the fill must write every row and bitmap byte)."""
    bitmap = (n + 7) // 8
    return SignalBuffers(
        pooled_empty(n, np.uint8),
        pooled_empty(n),
        pooled_empty(bitmap, np.uint8),
        pooled_empty(n),
        pooled_empty(bitmap, np.uint8),
    )


def frame_from_buffers(buffers: SignalBuffers) -> pl.DataFrame:
    """The signal frame over filled buffers; the level columns are taken zero-copy."""
    n = buffers.codes.shape[0]

    def levels(name: str, values: np.ndarray, valid: np.ndarray) -> pl.Series:
        array = pa.Array.from_buffers(pa.float64(), n, [pa.py_buffer(valid), pa.py_buffer(values)])
        return pl.Series(name, array)

    def lit(action: str) -> pl.Expr:
        return pl.lit(action, dtype=ACTION_DTYPE)

    c = pl.col("_code")
    action = pl.when(c == 1).then(lit("LONG")).when(c == 2).then(lit("SHORT")).when(c == 3).then(lit("EXIT"))
    return (
        pl.DataFrame({"_code": buffers.codes})
        .select(action.otherwise(lit("HOLD")).alias("action"))
        .with_columns(
            levels("stop_loss", buffers.stop, buffers.stop_valid),
            levels("take_profit", buffers.take, buffers.take_valid),
        )
    )


class KernelSignals(NamedTuple):
    """A built-in's signals straight in the backtest kernel's form, no frame: what
    `validate_signals` would hand the kernel for the same candles (a built-in that provides this
    proves it equal in tests). Levels are (values, validity bitmap, bit offset); an empty bitmap
    means the values are read as they are, and they are read on LONG/SHORT rows only (other rows
    may hold anything). `entries` counts the LONG/SHORT rows (sizes the kernel's trade buffer)."""

    codes: np.ndarray  # uint8[n]: HOLD=0 LONG=1 SHORT=2 EXIT=3
    stop: tuple[np.ndarray, np.ndarray, int]
    take: tuple[np.ndarray, np.ndarray, int]
    entries: int


class SmaRule(NamedTuple):
    """The SMA crossover's signals as a rule the backtest kernel computes inside its walk
    (`sma_crossover.cross_step`): no signal arrays at all. A single backtest's fast path."""

    fast: int
    slow: int
    sl_pct: float
    tp_pct: float
    short_code: int  # what a downward cross gives: SHORT (2), or EXIT (3) in long_only mode


class IndicatorMemo:
    """Indicator arrays of ONE candle frame shared by the combinations of a sweep (e.g. each SMA
    length's running sum once, not once per combination), up to `budget` bytes; beyond that they
    are computed and not kept. Thread-safe: two threads may both compute a missing entry (the
    same bits), and one of them is kept."""

    def __init__(self, budget: int = 256 << 20):
        self._arrays: dict[object, np.ndarray] = {}
        self._budget = budget
        self._scratch = threading.local()

    def scratch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's signal buffers (codes uint8, stop, take) for `n` rows, reused from one
        combination to the next: fresh ones cost a page fault per 4 KiB page the sparse level
        writes touch, as much as the signal pass itself. Valid until this thread's next call."""
        bufs = getattr(self._scratch, "bufs", None)
        if bufs is None or bufs[0].shape[0] != n:
            bufs = self._scratch.bufs = (np.empty(n, np.uint8), np.empty(n), np.empty(n))
        return bufs

    def get(self, key: object, nbytes: int, compute) -> np.ndarray:
        found = self._arrays.get(key)
        if found is not None:
            return found
        out = compute()
        if nbytes <= self._budget:
            self._budget -= nbytes
            self._arrays.setdefault(key, out)
        return out
