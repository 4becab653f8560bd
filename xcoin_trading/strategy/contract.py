"""The strategy contract shared by backtest and live: candles in, one signal row per candle out.

Candles (`CANDLE_COLUMNS`): `open_time` Int64 UTC ms (the lake's read API format), then
open/high/low/close/volume Float64, oldest first, strictly increasing times.

Signals (`SIGNAL_COLUMNS`): `action` (LONG/SHORT/EXIT/HOLD), `stop_loss`, `take_profit` (absolute
prices, nullable, read only on LONG/SHORT rows). Extra columns a strategy returns are ignored, so
it may keep indicator columns for debugging.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from xcoin_trading.candles import CANDLE_COLUMNS, read_candle_file, to_candle_frame
from xcoin_trading.errors import ValidationError
from xcoin_trading.money import to_decimal
from xcoin_trading.strategy.answer import shown


class Action(IntEnum):
    """A signal's action. The value is the backtest kernel's int8 code and the physical code of
    `ACTION_DTYPE` (its categories are listed in value order)."""

    HOLD = 0
    LONG = 1
    SHORT = 2
    EXIT = 3


ACTIONS = tuple(a.name for a in Action)
ACTION_DTYPE = pl.Enum(list(ACTIONS))
HOLD, LONG, SHORT, EXIT = map(int, Action)  # plain ints: numba compiles module globals as constants

SIGNAL_COLUMNS = ("action", "stop_loss", "take_profit")
JIT_MIN_ROWS = 2_000


def jit_for(kernel, rows: int):
    """The numba `kernel` for `rows` ≥ JIT_MIN_ROWS, else its plain-Python original.

    A live candle close passes a few hundred rows: interpreted, microseconds to a few ms. Compiled,
    the first call in a fresh worker process (one per Dagster run) loads numba's cache: ~0.5 s
    measured, inside the candle's latency. Backtests are long and pay it once per process."""
    return kernel if rows >= JIT_MIN_ROWS else kernel.py_func


@njit(cache=True, nogil=True)
def _candle_faults_nb(t, o, h, lo, c, v):
    """Counts of (non-finite, non-positive, unsorted, inverted) candles in one branch-free pass.

    The checks after the first apply to finite rows only. `x - x` is 0 for a finite x and NaN
    for NaN/inf, so one comparison tells whether a whole row is finite.
    """
    nonfinite = nonpositive = unsorted = inverted = 0
    prev = t[0] if t.shape[0] else 0
    for i in range(t.shape[0]):
        oi, hi, li, ci, vi = o[i], h[i], lo[i], c[i], v[i]
        finite = ((oi - oi) + (hi - hi) + (li - li) + (ci - ci) + (vi - vi)) == 0.0
        nonfinite += np.int64(not finite)
        nonpositive += np.int64(finite & (min(min(oi, hi), min(li, ci)) <= 0.0))
        unsorted += np.int64(finite & (i > 0) & (t[i] <= prev))
        inverted += np.int64(finite & ((hi < max(li, max(oi, ci))) | (li > min(oi, ci))))
        prev = t[i]
    return nonfinite, nonpositive, unsorted, inverted


@njit(cache=True, nogil=True)
def _level_faults_nb(action, close, stop, stop_bits, stop_offset, take, take_bits, take_offset):
    """The first bad row per check (-1: none), and how many entry rows have a stop / take profit.

    Checks on LONG/SHORT rows: non-finite, <= 0, LONG levels on the wrong side, SHORT levels on
    the wrong side. Levels are Arrow buffers (values + validity bitmap, empty: no nulls), read
    in place. The entry rows are found first in a branch-free pass, then only they are read
    (one loop doing both, or a helper taking the arrays, ran 5-20x slower).
    """
    n = action.shape[0]
    entries = 0
    for i in range(n):
        entries += (action[i] == LONG) | (action[i] == SHORT)
    rows = np.empty(entries, np.int64)
    k = 0
    for i in range(n):
        if (action[i] == LONG) | (action[i] == SHORT):
            rows[k] = i
            k += 1
    nonfinite = nonpositive = long_side = short_side = -1
    stops = takes = 0
    for i in rows:
        j = i + stop_offset
        has_sl = stop_bits.shape[0] == 0 or ((stop_bits[j >> 3] >> (j & 7)) & 1) == 1
        j = i + take_offset
        has_tp = take_bits.shape[0] == 0 or ((take_bits[j >> 3] >> (j & 7)) & 1) == 1
        stops += has_sl
        takes += has_tp
        sl = stop[i] if has_sl else np.nan
        tp = take[i] if has_tp else np.nan
        if (has_sl and not math.isfinite(sl)) or (has_tp and not math.isfinite(tp)):
            nonfinite = i if nonfinite < 0 else nonfinite
            sl = sl if math.isfinite(sl) else np.nan
            tp = tp if math.isfinite(tp) else np.nan
        if sl <= 0 or tp <= 0:
            nonpositive = i if nonpositive < 0 else nonpositive
        c = close[i]
        if action[i] == LONG and (sl >= c or tp <= c):
            long_side = i if long_side < 0 else long_side
        if action[i] == SHORT and (sl <= c or tp >= c):
            short_side = i if short_side < 0 else short_side
    return (nonfinite, nonpositive, long_side, short_side), stops, takes


def pooled_empty(n: int, dtype: type = np.float64) -> np.ndarray:
    """An uninitialised writable array from Arrow's memory pool, for large outputs polars will hold.

    A fresh numpy array this large is a new mmap whose every 4 KiB page faults on first write,
    on every run (here ~1.5 us a page: 6 ms for a backtest's curves of 1M candles). The Arrow pool
    (mimalloc/jemalloc) keeps freed pages for the next run, and polars takes the array zero-copy.
    """
    return np.frombuffer(pa.allocate_buffer(n * np.dtype(dtype).itemsize), dtype)


def float_buffers(series: pl.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Zero-copy views of a single-chunk Float64 series: (values, validity bitmap, bit offset)."""
    array = series.to_arrow()
    validity, data = array.buffers()[:2]
    values = np.frombuffer(data, np.float64, count=len(array), offset=array.offset * 8)
    bits = np.frombuffer(validity, np.uint8) if validity is not None else np.empty(0, np.uint8)
    return values, bits, array.offset


class StrategyError(ValidationError):
    """A strategy failed or broke the contract; names the strategy and what was wrong."""

    def __init__(self, strategy: str, reason: str):
        super().__init__("strategy", f"{strategy!r} {reason}")
        self.strategy = strategy


def normalize_candles(candles: pl.DataFrame, *, name: str = "candles") -> pl.DataFrame:
    """The one place a strategy's candles are checked and shaped (files, the lake, tests all pass here).

    Times as `xcoin_trading.candles.to_candle_frame` reads them (Int64 ms or a datetime; naive is UTC).
    """
    if not isinstance(candles, pl.DataFrame):
        raise ValidationError(name, f"must be a polars DataFrame, got {type(candles).__name__}")
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise ValidationError(name, f"is missing columns {missing} (has {candles.columns})")
    if candles.height == 0:
        raise ValidationError(name, "is empty: no candles in the requested range")
    # One contiguous copy here (none for contiguous input), so every later to_numpy() is zero-copy.
    out = to_candle_frame(candles, source=name).rechunk()
    nulls = sum(out.null_count().row(0))
    if nulls:
        raise ValidationError(name, f"has null values ({nulls} cells)")
    counts = jit_for(_candle_faults_nb, out.height)(*(out.get_column(c).to_numpy() for c in CANDLE_COLUMNS))
    reasons = (
        "has NaN or infinite prices/volumes ({} rows)",
        "has prices <= 0 ({} rows)",
        "open_time is not strictly increasing (duplicates or unsorted rows) ({} rows)",
        "has candles whose high/low do not bound open/close ({} rows)",
    )
    _raise_first_fault(functools.partial(ValidationError, name), counts, reasons, none=0)
    return out


def _raise_first_fault(
    error: Callable[[str], Exception],
    found: Sequence[int | np.integer],
    messages: Sequence[str],
    *,
    none: int,
) -> None:
    """A numba scan returns one figure per fault (a count, or the first row); `none` means absent.
    The first fault found is raised with its message, the figure filled in."""
    for figure, message in zip(found, messages, strict=True):
        if figure != none:
            raise error(message.format(figure))


def read_candles_file(path: str | Path) -> pl.DataFrame:
    """Candles from a file in any format the lake imports (`xcoin_trading.candles`), normalised
    to the contract: both readers see the same candles."""
    p = Path(path)
    if not p.exists():
        raise ValidationError("data", f"file does not exist: {p}")
    return normalize_candles(read_candle_file(p), name=f"data {p.name}")


def validate_signals(signals: object, candles: pl.DataFrame, strategy: str) -> pl.DataFrame:
    """Check a strategy's output against the contract; return `action` (Enum) + float levels.

    Levels on HOLD/EXIT rows are dropped. On LONG rows the stop must be below and the take
    profit above the close (reversed for SHORT): a level on the wrong side is a bug in the
    strategy, and silently filling it on the next candle would hide that bug.
    """
    if not isinstance(signals, pl.DataFrame):
        raise StrategyError(strategy, f"must return a polars DataFrame, got {type(signals).__name__}")
    missing = [c for c in SIGNAL_COLUMNS if c not in signals.columns]
    if missing:
        raise StrategyError(
            strategy, f"returned no {missing} column(s); columns were {shown(signals.columns, 300)}"
        )
    if signals.height != candles.height:
        raise StrategyError(
            strategy,
            f"returned {signals.height} rows for {candles.height} candles (one row per candle is required)",
        )
    action_t = signals.schema["action"]
    if action_t == ACTION_DTYPE:
        action = signals.get_column("action")
    elif action_t in (pl.String, pl.Categorical) or isinstance(action_t, pl.Enum):
        raw = signals.get_column("action").cast(pl.String)
        unknown = raw.filter(raw.is_not_null() & ~raw.is_in(ACTIONS))
        if unknown.len():
            row = int(raw.is_in(ACTIONS).not_().arg_true()[0])
            raise StrategyError(
                strategy, f"returned action {shown(unknown[0])} at row {row}; allowed: {', '.join(ACTIONS)}"
            )
        action = raw.cast(ACTION_DTYPE)
    else:
        raise StrategyError(strategy, f"action column must be strings {ACTIONS}, got dtype {action_t}")
    if action.null_count():
        row = int(action.is_null().arg_true()[0])
        raise StrategyError(strategy, f"returned a null action at row {row} (use HOLD for no signal)")

    levels = []
    for col in ("stop_loss", "take_profit"):
        dtype = signals.schema[col]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise StrategyError(strategy, f"{col} must be numeric or null, got dtype {dtype}")
        levels.append(signals.get_column(col).cast(pl.Float64).rechunk().alias(col))
    codes = action.to_physical().rechunk().to_numpy()  # the Enum's codes: HOLD=0 LONG=1 SHORT=2 EXIT=3
    first, stops, takes = jit_for(_level_faults_nb, candles.height)(
        codes, candles.get_column("close").to_numpy(), *float_buffers(levels[0]), *float_buffers(levels[1])
    )
    messages = (
        "returned NaN or infinite stop_loss/take_profit on an entry row {} (use null for none)",
        "returned a stop_loss/take_profit <= 0 at row {}",
        "returned a LONG at row {} whose stop_loss is not below or take_profit not above the close",
        "returned a SHORT at row {} whose stop_loss is not above or take_profit not below the close",
    )
    _raise_first_fault(functools.partial(StrategyError, strategy), first, messages, none=-1)
    frame = pl.DataFrame([action.alias("action"), *levels])
    # Levels on HOLD/EXIT rows mean nothing: dropped, so no reader mistakes them for live ones.
    n = signals.height
    if n - levels[0].null_count() > stops or n - levels[1].null_count() > takes:
        entry = pl.col("action").is_in(["LONG", "SHORT"])
        frame = frame.with_columns(
            pl.when(entry).then(pl.col(c)).alias(c) for c in ("stop_loss", "take_profit")
        )
    return frame


@dataclass(frozen=True)
class Signal:
    """The last candle's signal as the live path acts on it: exact prices from the float frame."""

    action: str  # LONG / SHORT / EXIT / HOLD
    price: Decimal  # the close of the signal candle: the reference entry price
    stop_loss: Decimal | None
    take_profit: Decimal | None
    candle_open_ms: int


def last_signal(signals: pl.DataFrame, candles: pl.DataFrame) -> Signal:
    row = signals.row(signals.height - 1, named=True)
    last = candles.row(candles.height - 1, named=True)

    def level(value: float | None) -> Decimal | None:
        return None if value is None else to_decimal(float(value))

    return Signal(str(row["action"]), to_decimal(float(last["close"])), level(row["stop_loss"]), level(row["take_profit"]),
                  int(last["open_time"]))  # fmt: skip
