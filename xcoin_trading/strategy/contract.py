"""The strategy contract shared by backtest and live: candles in, one signal row per candle out.

Candles (`CANDLE_COLUMNS`): `open_time` Int64 UTC ms (the lake's read API format), then
open/high/low/close/volume Float64, oldest first, strictly increasing times.

Signals (`SIGNAL_COLUMNS`): `action` (LONG/SHORT/EXIT/HOLD), `stop_loss`, `take_profit` (absolute
prices, nullable, read only on LONG/SHORT rows). Extra columns a strategy returns are ignored, so
it may keep indicator columns for debugging.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from xcoin_trading.errors import ValidationError

ACTIONS = ("HOLD", "LONG", "SHORT", "EXIT")
# Physical codes of the Enum are the kernel's int8 action codes: HOLD=0, LONG=1, SHORT=2, EXIT=3.
ACTION_DTYPE = pl.Enum(list(ACTIONS))
HOLD, LONG, SHORT, EXIT = range(4)

PRICE_COLUMNS = ("open", "high", "low", "close")
CANDLE_COLUMNS = ("open_time", *PRICE_COLUMNS, "volume")
SIGNAL_COLUMNS = ("action", "stop_loss", "take_profit")


class StrategyError(ValidationError):
    """A strategy failed or broke the contract; names the strategy and what was wrong."""

    def __init__(self, strategy: str, reason: str):
        super().__init__("strategy", f"{strategy!r} {reason}")
        self.strategy = strategy


def normalize_candles(candles: pl.DataFrame, *, name: str = "candles") -> pl.DataFrame:
    """The one place candle frames are checked and shaped (files, the lake, tests all pass here).

    Accepts `open_time` as Int64 ms or a Datetime of any unit/zone (naive is refused: ambiguous).
    """
    if not isinstance(candles, pl.DataFrame):
        raise ValidationError(name, f"must be a polars DataFrame, got {type(candles).__name__}")
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise ValidationError(name, f"is missing columns {missing} (has {candles.columns})")
    if candles.height == 0:
        raise ValidationError(name, "is empty: no candles in the requested range")
    t = candles.schema["open_time"]
    if isinstance(t, pl.Datetime):
        if t.time_zone is None:
            raise ValidationError(f"{name}.open_time", "is a naive datetime; candle times must be UTC-aware")
        open_time = pl.col("open_time").dt.convert_time_zone("UTC").dt.epoch("ms")
    elif t.is_integer():
        open_time = pl.col("open_time").cast(pl.Int64)
    else:
        raise ValidationError(
            f"{name}.open_time", f"must be Int64 UTC milliseconds or a UTC datetime, got {t}"
        )
    for c in (*PRICE_COLUMNS, "volume"):
        if not candles.schema[c].is_numeric():
            raise ValidationError(f"{name}.{c}", f"must be numeric, got {candles.schema[c]}")
    out = candles.select(
        open_time.alias("open_time"), *(pl.col(c).cast(pl.Float64) for c in CANDLE_COLUMNS[1:])
    )
    bad = out.select(
        nulls=pl.any_horizontal(pl.all().is_null()).sum(),
        nonfinite=pl.any_horizontal(~pl.col(*PRICE_COLUMNS, "volume").is_finite()).sum(),
        nonpositive=pl.any_horizontal(pl.col(*PRICE_COLUMNS) <= 0).sum(),
        unsorted=(pl.col("open_time").diff() <= 0).sum(),
        inverted=(
            (pl.col("high") < pl.col("low"))
            | (pl.col("high") < pl.max_horizontal("open", "close"))
            | (pl.col("low") > pl.min_horizontal("open", "close"))
        ).sum(),
    ).row(0, named=True)
    reasons = {
        "nulls": "has null values",
        "nonfinite": "has NaN or infinite prices/volumes",
        "nonpositive": "has prices <= 0",
        "unsorted": "open_time is not strictly increasing (duplicates or unsorted rows)",
        "inverted": "has candles whose high/low do not bound open/close",
    }
    for key, reason in reasons.items():
        if bad[key]:
            raise ValidationError(name, f"{reason} ({bad[key]} rows)")
    return out


def read_candles_file(path: str | Path) -> pl.DataFrame:
    """Candles from a Parquet (or CSV) file, normalised to the contract."""
    p = Path(path)
    if not p.exists():
        raise ValidationError("data", f"file does not exist: {p}")
    try:
        frame = pl.read_csv(p, try_parse_dates=True) if p.suffix.lower() == ".csv" else pl.read_parquet(p)
    except Exception as exc:  # a corrupt or foreign file: say which and why
        raise ValidationError("data", f"could not read {p}: {exc}") from exc
    return normalize_candles(frame, name=f"data {p.name}")


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
        raise StrategyError(strategy, f"returned no {missing} column(s); columns were {signals.columns}")
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
                strategy, f"returned action {unknown[0]!r} at row {row}; allowed: {', '.join(ACTIONS)}"
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
        levels.append(signals.get_column(col).cast(pl.Float64))
    frame = pl.DataFrame({"action": action, "stop_loss": levels[0], "take_profit": levels[1]})
    entry = pl.col("action").is_in(["LONG", "SHORT"])
    frame = frame.with_columns(
        pl.when(entry).then(pl.col(c)).otherwise(None).alias(c) for c in ("stop_loss", "take_profit")
    )
    checks = (
        frame.with_columns(close=candles.get_column("close"), row=pl.int_range(pl.len()))
        .select(
            nan=pl.col("row")
            .filter(~pl.col("stop_loss").is_finite() | ~pl.col("take_profit").is_finite())
            .first(),
            nonpositive=pl.col("row")
            .filter((pl.col("stop_loss") <= 0) | (pl.col("take_profit") <= 0))
            .first(),
            long_side=pl.col("row")
            .filter(
                (pl.col("action") == "LONG")
                & ((pl.col("stop_loss") >= pl.col("close")) | (pl.col("take_profit") <= pl.col("close")))
            )
            .first(),
            short_side=pl.col("row")
            .filter(
                (pl.col("action") == "SHORT")
                & ((pl.col("stop_loss") <= pl.col("close")) | (pl.col("take_profit") >= pl.col("close")))
            )
            .first(),
        )
        .row(0, named=True)
    )
    messages = {
        "nan": "returned NaN or infinite stop_loss/take_profit on an entry row {row} (use null for none)",
        "nonpositive": "returned a stop_loss/take_profit <= 0 at row {row}",
        "long_side": "returned a LONG at row {row} whose stop_loss is not below or take_profit not above the close",
        "short_side": "returned a SHORT at row {row} whose stop_loss is not above or take_profit not below the close",
    }
    for key, message in messages.items():
        if checks[key] is not None:
            raise StrategyError(strategy, message.format(row=checks[key]))
    return frame
