"""The backtest API: validate inputs, compute signals once, run the kernel, shape the outputs.

Fill, sizing, stop and slippage rules: docs/backtesting.md ("Strategies and rules").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal, overload

import numpy as np
import polars as pl

from xcoin_trading.backtest import kernel as k
from xcoin_trading.backtest.inputs import (  # noqa: F401 - kernel_signals, slice_signals: imported from here too
    kernel_rule,
    kernel_signals,
    normalized,
    on_tick,
    signal_arrays,
    slice_signals,
)
from xcoin_trading.backtest.metrics import compute_metrics
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.money import to_decimal
from xcoin_trading.risk import market_rounding_args
from xcoin_trading.strategy import Strategy, load_strategy, normalize_candles
from xcoin_trading.strategy.builtin._common import KernelSignals, SmaRule
from xcoin_trading.strategy.contract import pooled_empty
from xcoin_trading.timeframes import MINUTE_MS, RESOLUTION_MS, resolution_ms

IntrabarRule = Literal["sl_first", "tp_first", "1m"]
GapFill = Literal["open", "level"]
INTRABAR_RULES = ("sl_first", "tp_first", "1m")
GAP_FILLS = ("open", "level")
MAX_LEVERAGE = Decimal(125)

TRADE_SCHEMA = {
    "trade_id": pl.Int64,
    "side": pl.String,
    "entry_time": pl.Datetime("ms", "UTC"),
    "exit_time": pl.Datetime("ms", "UTC"),
    "entry_index": pl.Int64,
    "exit_index": pl.Int64,
    "entry_price": pl.Float64,
    "exit_price": pl.Float64,
    "quantity": pl.Float64,
    "stop_loss": pl.Float64,
    "take_profit": pl.Float64,
    "entry_fee": pl.Float64,
    "exit_fee": pl.Float64,
    "gross_pnl": pl.Float64,
    "pnl": pl.Float64,
    "pnl_pct": pl.Float64,
    "exit_reason": pl.String,
    "ambiguous": pl.Boolean,
    "intrabar_resolved": pl.Boolean,
}


_DECIMALS = ("initial_capital", "risk_per_trade", "leverage", "commission", "slippage", "slippage_range")


@dataclass(frozen=True)
class SimulationConfig:
    """How the account is simulated. Money inputs are exact decimals; the kernel gets floats."""

    initial_capital: Decimal = Decimal(10_000)
    risk_per_trade: Decimal = Decimal("0.02")
    leverage: Decimal = Decimal(1)
    commission: Decimal = Decimal("0.001")
    intrabar: IntrabarRule = "sl_first"
    gap_fill: GapFill = "open"
    market: Market | None = None  # quantity rounding and minimums; None: fractional, no minimums
    levels_on_tick: bool = False  # SL/TP rounded to the market's tick, as live places them (parity)
    resolution: str | None = None  # annualisation; None: inferred from the candle spacing
    slippage: Decimal = Decimal(0)  # market fills move this fraction against us (the simulator's --slippage)
    slippage_range: Decimal = Decimal(0)  # ... plus this fraction of the fill candle's high - low

    def __post_init__(self) -> None:
        for name in _DECIMALS:
            try:
                object.__setattr__(self, name, to_decimal(getattr(self, name)))
            except Exception:
                raise ValidationError(name, f"must be a number, got {getattr(self, name)!r}") from None
        if not self.initial_capital.is_finite() or self.initial_capital <= 0:
            raise ValidationError("initial_capital", f"must be > 0, got {self.initial_capital}")
        if not 0 < self.risk_per_trade <= 1:
            raise ValidationError("risk_per_trade", f"must be in (0, 1], got {self.risk_per_trade}")
        if not 1 <= self.leverage <= MAX_LEVERAGE:
            raise ValidationError("leverage", f"must be in [1, {MAX_LEVERAGE}], got {self.leverage}")
        if self.market is not None and self.market.max_leverage and self.leverage > self.market.max_leverage:
            raise ValidationError(
                "leverage",
                f"must be <= {self.market.max_leverage} for {self.market.symbol}, got {self.leverage}",
            )
        if not 0 <= self.commission < Decimal("0.1"):
            raise ValidationError(
                "commission", f"must be in [0, 0.1) (a fraction of notional), got {self.commission}"
            )
        if not 0 <= self.slippage < Decimal("0.1"):
            raise ValidationError(
                "slippage",
                f"must be in [0, 0.1) (a fraction of the price: 0.0005 = 5 bps), got {self.slippage}",
            )
        if not 0 <= self.slippage_range <= 1:
            raise ValidationError(
                "slippage_range",
                f"must be in [0, 1] (a fraction of the candle's high - low), got {self.slippage_range}",
            )
        if self.intrabar not in INTRABAR_RULES:
            raise ValidationError("intrabar", f"must be one of {INTRABAR_RULES}, got {self.intrabar!r}")
        if self.gap_fill not in GAP_FILLS:
            raise ValidationError("gap_fill", f"must be one of {GAP_FILLS}, got {self.gap_fill!r}")
        if self.resolution is not None:
            resolution_ms(self.resolution)
        if self.levels_on_tick and self.market is None:
            raise ValidationError("levels_on_tick", "needs a market whose tick the levels are rounded to")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in _DECIMALS:
            out[name] = str(out[name])
        out["market"] = self.market.symbol if self.market else None
        return out


class _BuiltOnRead:
    """A frame field that may be given as a function that builds it: built on the first read and
    kept. A backtest's per-candle curves and trade frame (~2 and ~1 ms at 1M candles) are then only
    paid for by a caller that reads them (reports, stored results), not by one that wants the
    metrics (a sweep of single backtests, the benchmark)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> _BuiltOnRead: ...
    @overload
    def __get__(self, obj: object, owner: type) -> pl.DataFrame: ...
    def __get__(self, obj: object | None, owner: type) -> pl.DataFrame | _BuiltOnRead:
        if obj is None:
            raise AttributeError(self._slot)  # no default for the dataclass
        value = obj.__dict__[self._slot]
        if not isinstance(value, pl.DataFrame):
            value = obj.__dict__[self._slot] = value()
        return value

    def __set__(self, obj: object, value: pl.DataFrame | Callable[[], pl.DataFrame]) -> None:
        obj.__dict__[self._slot] = value


@dataclass(frozen=True)
class _EquityCurves:
    """Builds a backtest's equity frame from its trades (`kernel.curves_nb`); picklable, as the
    result is."""

    candles: pl.DataFrame
    trades: np.ndarray
    initial_capital: float

    def __call__(self) -> pl.DataFrame:
        n = self.candles.height
        # From Arrow's pool, as the walk's curves were: fresh numpy arrays fault on every page.
        curves = (pooled_empty(n), pooled_empty(n), pooled_empty(n), pooled_empty(n, np.int8))
        close = self.candles.get_column("close").to_numpy()
        k.curves_nb(close, self.trades, self.initial_capital, *curves)
        return equity_frame(self.candles, curves)


@dataclass(frozen=True)
class _TradesFrame:
    """Builds a backtest's trade frame from the kernel's trade matrix (`trades_frame`); picklable."""

    trades: np.ndarray
    open_time: np.ndarray
    candle_ms: int

    def __call__(self) -> pl.DataFrame:
        return trades_frame(self.trades, self.open_time, self.candle_ms)


def equity_frame(candles: pl.DataFrame, curves: tuple[np.ndarray, ...]) -> pl.DataFrame:
    equity, drawdown, drawdown_pct, position = curves
    return pl.DataFrame(
        {
            "open_time": candles.get_column("open_time").cast(pl.Datetime("ms", "UTC")),
            "close": candles.get_column("close"),
            "equity": equity,
            "drawdown": drawdown,
            "drawdown_pct": drawdown_pct,
            "position": position,
        }
    )


@dataclass
class BacktestResult:
    strategy: str
    params: dict[str, Any]
    config: SimulationConfig
    # TRADE_SCHEMA; or a function building it on read (as for `equity`)
    trades: pl.DataFrame = _BuiltOnRead()  # type: ignore[assignment]
    # open_time, close, equity, drawdown, drawdown_pct, position; or a function building it on read
    equity: pl.DataFrame = _BuiltOnRead()  # type: ignore[assignment]
    metrics: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)  # first and last candle open_time (ms)
    candle_ms: int = MINUTE_MS
    source: dict[str, Any] = field(default_factory=dict)  # where the candles came from (symbol, file)

    def summary(self) -> dict[str, Any]:
        """What is stored with the result: config, params, metrics (all JSON-safe)."""
        return {
            "strategy": self.strategy,
            "params": self.params,
            "config": self.config.to_json(),
            "metrics": self.metrics,
            "start_ms": self.span[0],
            "end_ms": self.span[1],
        }


def infer_candle_ms(open_time: np.ndarray, resolution: str | None) -> int:
    """The candle length: the given resolution, else the most common spacing (gaps are real)."""
    if resolution is not None:
        return resolution_ms(resolution)
    if open_time.shape[0] < 2:
        raise ValidationError("resolution", "cannot be inferred from a single candle; give it explicitly")
    diffs = np.diff(open_time[: min(open_time.shape[0], 10_001)])
    if (diffs == diffs[0]).all():  # no gap in the sample: no need to count (np.unique sorts)
        return int(diffs[0])
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _resolution_name(candle_ms: int) -> str:
    return next((name for name, ms in RESOLUTION_MS.items() if ms == candle_ms), f"{candle_ms}ms")


def _intrabar_bounds(
    open_time: np.ndarray, candle_ms: int, intrabar: pl.DataFrame | None
) -> tuple[np.ndarray, ...]:
    if intrabar is None:
        raise ValidationError(
            "intrabar", "'1m' needs the 1-minute candles of the same span (intrabar candles)"
        )
    if candle_ms <= MINUTE_MS:
        raise ValidationError(
            "intrabar", "'1m' only applies to candles longer than 1 minute; these are 1m already"
        )
    m1 = normalize_candles(intrabar, name="intrabar candles")
    t = m1.get_column("open_time").to_numpy()
    bounds = np.empty(open_time.shape[0] + 1, np.int64)
    bounds[:-1] = np.searchsorted(t, open_time, side="left")
    bounds[-1] = np.searchsorted(t, open_time[-1] + candle_ms, side="left")
    return (
        m1.get_column("open").to_numpy(),
        m1.get_column("high").to_numpy(),
        m1.get_column("low").to_numpy(),
        bounds,
    )


class LevelsOutsideContract(Exception):
    """A fused rule's (`SmaRule`) entry levels break the signal contract: take the frame path,
    which names the row."""


def _trade_room(n: int) -> int:
    """Trade columns for a fused walk, whose entry count is unknown up front: a trade every 16
    candles (SMA 20/50 on 1m candles trades about every 85); a walk with more runs again."""
    return n // 16 + 64


def run_kernel(
    candles: pl.DataFrame,
    signals: pl.DataFrame | KernelSignals | SmaRule,
    config: SimulationConfig,
    intrabar_candles: pl.DataFrame | None = None,
    candle_ms: int | None = None,
    *,
    keep_curves: bool = True,
    sma_sums: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...] | None]:
    """The kernel on normalised candles and validated signals (a frame, `kernel_signals`' kernel
    form, or a built-in's rule the kernel computes them with): raw arrays, no shaping.

    Returns (trades, refused, stats, curves): curves are (equity, drawdown, drawdown_pct,
    position) per candle, or None without `keep_curves` (sweeps need only the statistics).
    `sma_sums`: with a rule, its running sums precomputed on these candles (`inputs.rule_sums`).
    """
    open_time = candles.get_column("open_time").to_numpy()
    if candle_ms is None:
        candle_ms = infer_candle_ms(open_time, config.resolution)
    empty = np.empty(0)
    m1 = (
        _intrabar_bounds(open_time, candle_ms, intrabar_candles)
        if config.intrabar == "1m"
        else (empty, empty, empty, np.empty(0, np.int64))
    )
    sma = None
    if isinstance(signals, SmaRule):
        sma = tuple(signals)
        action, no_levels = np.empty(0, np.uint8), (empty, np.empty(0, np.uint8), 0)
        stop, take, entries = no_levels, no_levels, _trade_room(open_time.shape[0])
    elif isinstance(signals, KernelSignals):
        action, stop, take, entries = signals
    else:
        action, stop, take = signal_arrays(signals)
        entries = k.count_entries(action)
    if config.levels_on_tick:
        stop, take = on_tick(stop, config.market), on_tick(take, config.market)
    n = open_time.shape[0] if keep_curves else 0
    curves = (pooled_empty(n), pooled_empty(n), pooled_empty(n), pooled_empty(n, np.int8))
    args = (
        candles.get_column("open").to_numpy(),
        candles.get_column("high").to_numpy(),
        candles.get_column("low").to_numpy(),
        candles.get_column("close").to_numpy(),
        action,
        *stop,
        *take,
        float(config.initial_capital),
        float(config.risk_per_trade),
        float(config.leverage),
        float(config.commission),
        *market_rounding_args(config.market),
        config.gap_fill == "open",
        config.intrabar == "tp_first",
        float(config.slippage),
        float(config.slippage_range),
        float(config.market.tick) if config.levels_on_tick and config.market else 0.0,
        *m1,
        *curves,
    )
    while True:
        trades = pooled_empty(k.N_TRADE_FIELDS * entries).reshape(k.N_TRADE_FIELDS, -1)
        count, refused, stats, ok = k.simulate_nb(*args, trades, sma, sma_sums if sma is not None else None)
        if not ok:
            raise LevelsOutsideContract
        if count <= entries:
            return trades[:, :count], refused, stats, curves if keep_curves else None
        entries = count  # a fused walk with more trades than room: again, with room for all


def _labels(codes: np.ndarray, labels: tuple[str, ...]) -> pl.Series:
    return pl.Series(labels, dtype=pl.String).gather(codes)


def trades_frame(trades: np.ndarray, open_time: np.ndarray, candle_ms: int) -> pl.DataFrame:
    entry_idx = trades[k.T_ENTRY_IDX].astype(np.int64)
    exit_idx = trades[k.T_EXIT_IDX].astype(np.int64)
    qty, entry_price = trades[k.T_QTY], trades[k.T_ENTRY_PRICE]
    fees = trades[k.T_ENTRY_FEE] + trades[k.T_EXIT_FEE]
    pnl = trades[k.T_PNL]
    # Entry at the close of the signal candle; an exit is stamped at the close of its candle
    # (a stop filled inside the candle has no finer time at this resolution).
    columns = {
        "trade_id": np.arange(1, trades.shape[1] + 1, dtype=np.int64),
        "side": _labels((trades[k.T_SIDE] > 0).astype(np.int8), ("SHORT", "LONG")),
        "entry_time": open_time[entry_idx] + candle_ms,
        "exit_time": open_time[exit_idx] + candle_ms,
        "entry_index": entry_idx,
        "exit_index": exit_idx,
        "entry_price": entry_price,
        "exit_price": trades[k.T_EXIT_PRICE],
        "quantity": qty,
        "stop_loss": trades[k.T_STOP],  # NaN (no level) becomes null
        "take_profit": trades[k.T_TAKE],
        "entry_fee": trades[k.T_ENTRY_FEE],
        "exit_fee": trades[k.T_EXIT_FEE],
        "gross_pnl": pnl + fees,
        "pnl": pnl,
        "pnl_pct": pnl / (qty * entry_price) * 100 if trades.shape[1] else pnl,
        "exit_reason": _labels(trades[k.T_REASON].astype(np.int8), k.REASONS),
        "ambiguous": trades[k.T_AMBIGUOUS] > 0,
        "intrabar_resolved": trades[k.T_INTRABAR] > 0,
    }
    # Series one by one: a dict of numpy columns with nan_to_null makes polars start a thread
    # pool per frame (~3 ms, more than the conversions it spreads).
    return pl.DataFrame(
        [
            values.alias(name)
            if isinstance(values, pl.Series)
            else pl.Series(name, values, dtype, nan_to_null=name in ("stop_loss", "take_profit"))
            for (name, dtype), values in zip(TRADE_SCHEMA.items(), columns.values(), strict=True)
        ]
    )


def simulate(
    candles: pl.DataFrame,
    signals: pl.DataFrame | KernelSignals | SmaRule,
    config: SimulationConfig,
    *,
    strategy: str = "signals",
    params: dict[str, Any] | None = None,
    intrabar_candles: pl.DataFrame | None = None,
) -> BacktestResult:
    """Backtest precomputed, validated signals on normalised candles."""
    t0 = time.perf_counter()
    open_time = candles.get_column("open_time").to_numpy()
    candle_ms = infer_candle_ms(open_time, config.resolution)
    trades, refused, stats, _ = run_kernel(
        candles, signals, config, intrabar_candles, candle_ms, keep_curves=False
    )
    t1 = time.perf_counter()
    metrics = compute_metrics(
        trades,
        stats,
        n_candles=open_time.shape[0],
        initial_capital=float(config.initial_capital),
        candle_ms=candle_ms,
        refused=refused,
    )
    metrics["resolution"] = config.resolution or _resolution_name(candle_ms)
    result = BacktestResult(
        strategy=strategy,
        params=dict(params or {}),
        config=config,
        trades=_TradesFrame(trades, open_time, candle_ms),  # built when read
        equity=_EquityCurves(candles, trades, float(config.initial_capital)),  # built when read
        metrics=metrics,
        span=(int(open_time[0]), int(open_time[-1])),
        candle_ms=candle_ms,
    )
    t2 = time.perf_counter()
    result.timings_ms = {"simulate": (t1 - t0) * 1000, "metrics": (t2 - t1) * 1000}
    return result


def run_backtest(
    candles: pl.DataFrame,
    strategy: Strategy | str,
    params: dict[str, Any] | None = None,
    config: SimulationConfig | None = None,
    *,
    intrabar_candles: pl.DataFrame | None = None,
) -> BacktestResult:
    """Signals once over the whole history, then the kernel, then metrics."""
    t0 = time.perf_counter()
    config = config or SimulationConfig()
    strat = load_strategy(strategy) if isinstance(strategy, str) else strategy
    resolved = strat.resolve_params(params)
    candles = normalized(candles)
    t1 = time.perf_counter()
    signals = kernel_rule(strat, resolved, config) or kernel_signals(strat, candles, resolved, config)
    t2 = time.perf_counter()
    try:
        result = simulate(
            candles, signals, config, strategy=strat.code, params=resolved, intrabar_candles=intrabar_candles
        )
    except LevelsOutsideContract:  # the frame path names the row (and raises)
        signals = kernel_signals(strat, candles, resolved, config)
        result = simulate(
            candles, signals, config, strategy=strat.code, params=resolved, intrabar_candles=intrabar_candles
        )
    result.timings_ms = {"prepare": (t1 - t0) * 1000, "signals": (t2 - t1) * 1000, **result.timings_ms}
    result.timings_ms["total"] = (time.perf_counter() - t0) * 1000
    return result
