"""Walk-forward optimisation: choose parameters on each train window, trade them on the next test
window, and stitch the test windows into one out-of-sample equity curve.

- Windows: `windows` test windows of equal length tile the end of the data; each train window ends
  exactly where its test window starts and is `train_ratio` times as long (rolling), or starts at
  the first candle (anchored). Train windows never contain a test candle of their own window.
- Training: every grid combination is backtested on the train window's candles alone (its signals
  computed on those candles only), ranked by `metric`; the best is chosen.
- Testing: the chosen set trades the test window flat from its first candle, its signals computed on
  train + test candles (the train part is warm-up, nothing after the test window exists). The
  capital compounds from one test window to the next; a position open at a window's end closes
  there (END), so each window's result is its own.
- Look-ahead: a causal strategy gives the same signals on the train candles whether or not the test
  candles follow. The chosen set of every window is checked that way; a strategy whose past signals
  change when later candles are added reads the future, and the walk-forward refuses it
  (`LookaheadError`, naming the first candle that changed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from xcoin_trading.backtest import kernel as k
from xcoin_trading.backtest.engine import (
    BacktestResult,
    SimulationConfig,
    infer_candle_ms,
    normalized,
    run_kernel,
    trades_frame,
)
from xcoin_trading.backtest.metrics import compute_metrics, curve_stats
from xcoin_trading.backtest.sweep import (
    RANKING_COLUMNS,
    better,
    check_grid,
    check_metric,
    default_workers,
    edge_warnings,
    rank,
    score,
)
from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy import Strategy, compute_signals
from xcoin_trading.strategy.builtin._common import IndicatorMemo

MAX_WINDOWS = 100


class LookaheadError(ValidationError):
    """The strategy's signals on past candles depend on candles after them."""

    def __init__(self, strategy: str, window: int, when: str, detail: str):
        super().__init__(
            "strategy",
            f"{strategy} looks ahead: its signal at {when} (window {window}) changed when later candles "
            f"were added ({detail}); walk-forward results of such a strategy mean nothing",
        )


@dataclass(frozen=True)
class Window:
    index: int  # 1-based, as the UI shows it
    train: tuple[int, int]  # candle rows [start, end)
    test: tuple[int, int]

    @property
    def key(self) -> str:
        return f"w{self.index:02d}"


def make_windows(
    n: int, windows: int = 10, train_ratio: float = 3.0, *, anchored: bool = False
) -> list[Window]:
    """Test windows of n // (windows + train_ratio) candles tiling the end of the data (the last
    takes the remainder); train windows `train_ratio` times as long right before each (rolling) or
    from candle 0 (anchored)."""
    if not 1 <= windows <= MAX_WINDOWS:
        raise ValidationError("windows", f"must be in [1, {MAX_WINDOWS}], got {windows}")
    if not (isinstance(train_ratio, int | float) and math.isfinite(train_ratio) and train_ratio > 0):
        raise ValidationError("train_ratio", f"must be > 0 (train length / test length), got {train_ratio}")
    test_len = int(n // (windows + train_ratio))
    train_len = n - windows * test_len if anchored else int(round(test_len * train_ratio))
    first_test = n - windows * test_len
    if test_len < 2 or first_test < 2:
        raise ValidationError(
            "windows",
            f"{windows} windows at train/test {train_ratio:g} leave too few candles per window in {n}",
        )
    out = []
    for i in range(windows):
        start = first_test + i * test_len
        end = n if i == windows - 1 else start + test_len
        train_start = 0 if anchored else max(0, start - train_len)
        out.append(Window(i + 1, (train_start, start), (start, end)))
    return out


@dataclass
class WindowChoice:
    """A trained window: its ranking and the chosen set (params resolved), its in-sample score."""

    window: Window
    ranking: pl.DataFrame
    params: dict[str, Any] | None  # None: no combination produced a score
    in_sample: float | None
    warnings: list[str] = field(default_factory=list)
    # The chosen set's signals on the test candles (train candles as warm-up), as the look-ahead
    # check computed them: the out-of-sample run trades these instead of computing them again.
    test_signals: pl.DataFrame | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window.index,
            "train": list(self.window.train),
            "test": list(self.window.test),
            "params": self.params,
            "in_sample": self.in_sample,
            "warnings": self.warnings,
        }


@dataclass
class WalkForwardResult:
    windows: pl.DataFrame  # one row per window: spans, chosen params, in/out-of-sample scores
    choices: list[WindowChoice]
    oos: BacktestResult  # the stitched out-of-sample backtest (trades and equity of every test window)
    metric: str
    warnings: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "windows": json_rows(self.windows),
            "oos_metrics": self.oos.metrics,
            "warnings": self.warnings,
        }


def json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    from xcoin_trading.backtest.metrics import json_safe

    return json_safe(
        [
            {k: (str(v) if hasattr(v, "isoformat") else v) for k, v in r.items()}
            for r in frame.iter_rows(named=True)
        ]
    )


def _resolve(
    strategy: Strategy, base: Mapping[str, Any] | None, combo: Mapping[str, Any]
) -> dict[str, Any] | str:
    try:
        return strategy.resolve_params({**(base or {}), **combo})
    except ValidationError as exc:
        return str(exc)


def train_windows(
    candles: pl.DataFrame,
    strategy: Strategy,
    grid: Mapping[str, Sequence[Any]],
    config: SimulationConfig,
    windows: Sequence[Window],
    *,
    base_params: Mapping[str, Any] | None = None,
    metric: str = "sharpeRatio",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[WindowChoice]:
    """Every (window, combination) cell on the window's train candles, the combinations of a window
    in parallel threads (sharing that window's indicators), the windows one after another; the best
    of each window checked for look-ahead against its test candles."""
    check_metric(metric)
    combos = check_grid(strategy, grid)
    candles = normalized(candles)
    candle_ms = infer_candle_ms(candles.get_column("open_time").to_numpy(), config.resolution)
    resolved = [_resolve(strategy, base_params, c) for c in combos]
    total = len(windows) * len(combos)

    def cell(train: pl.DataFrame, memo: IndicatorMemo, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {f"param_{n}": str(v) for n, v in combos[i].items()}
        params = resolved[i]
        if isinstance(params, str):
            return row | {"error": params}
        metrics = score(strategy, train, params, config, candle_ms, memo)
        return row | {c: metrics.get(c) for c in metrics} | {"error": None}

    choices = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for w, window in enumerate(windows):
            start, end = window.train
            train, memo = candles.slice(start, end - start), IndicatorMemo()
            rows = []
            for row in pool.map(lambda i, train=train, memo=memo: cell(train, memo, i), range(len(combos))):
                rows.append(row)
                if progress is not None:
                    progress(w * len(combos) + len(rows), total)
            best_i, best = None, None
            for i, row in enumerate(rows):
                if row.get("error") is None and (best_i is None or better(metric, row.get(metric), best)):
                    best_i, best = i, row.get(metric)
            params = resolved[best_i] if best_i is not None else None
            if isinstance(params, str):  # the best row is one without an error, so its set resolved
                raise AssertionError(f"the chosen parameter set did not resolve: {params}")
            ranking = rank([{c: r.get(c) for c in r if c in _KEPT or c.startswith("param_") or c == metric}
                            for r in rows], grid, metric)  # fmt: skip
            warnings = (
                [f"{window.key}: {m}" for m in edge_warnings(grid, combos[best_i])]
                if best_i is not None
                else []
            )
            choices.append(WindowChoice(window, ranking, params, best, warnings))

        # The look-ahead checks of all windows in parallel too (one after another they were a
        # serial tail as long as a tenth of the training); the first failing window is raised.
        def checked(choice: WindowChoice) -> pl.DataFrame | None:
            if choice.params is None:
                return None
            return check_lookahead(strategy, candles, choice.params, choice.window)

        for choice, test_signals in zip(choices, pool.map(checked, choices), strict=True):
            choice.test_signals = test_signals
    return choices


_KEPT = {"error", *RANKING_COLUMNS}


def check_lookahead(
    strategy: Strategy, candles: pl.DataFrame, params: Mapping[str, Any], window: Window
) -> pl.DataFrame:
    """Signals on the train candles alone must equal those on train + test, row for row.

    Returns the signals of the test candles from that longer run (what the test window trades)."""
    start, mid = window.train
    end = window.test[1]
    alone = compute_signals(strategy, candles.slice(start, mid - start), params)
    whole = compute_signals(strategy, candles.slice(start, end - start), params)
    longer = whole.head(mid - start)
    same = (
        alone.select(
            # Both are validated (`action` is the same Enum): compared as categories, not strings
            # (casting 2 × 230k actions to strings took 20 ms a window).
            pl.col("action").eq_missing(longer.get_column("action"))
            & pl.col("stop_loss").eq_missing(longer.get_column("stop_loss"))
            & pl.col("take_profit").eq_missing(longer.get_column("take_profit"))
        )
        .to_series()
        .fill_null(False)
    )
    if not same.all():
        first_difference = same.arg_min()
        if first_difference is None:  # not all the same, so a False exists
            raise AssertionError("look-ahead check: no differing row found")
        row = int(first_difference)
        when = candles.get_column("open_time")[start + row]
        a, b = alone.row(row, named=True), longer.row(row, named=True)
        raise LookaheadError(
            strategy.code,
            window.index,
            str(when)
            if not isinstance(when, int)
            else str(pl.Series([when]).cast(pl.Datetime("ms", "UTC"))[0]),
            f"{a['action']} {a['stop_loss']}/{a['take_profit']} became {b['action']} {b['stop_loss']}/{b['take_profit']}",
        )
    # A copy of the test rows only: a slice would keep the whole train + test frame alive.
    return whole.gather(np.arange(mid - start, end - start))


def out_of_sample(
    candles: pl.DataFrame,
    strategy: Strategy,
    choices: Sequence[WindowChoice],
    config: SimulationConfig,
    *,
    metric: str = "sharpeRatio",
) -> WalkForwardResult:
    """Trade each window's chosen set on its test candles, compounding, and stitch the result."""
    from dataclasses import replace

    candles = normalized(candles)
    open_time = candles.get_column("open_time").to_numpy()
    candle_ms = infer_candle_ms(open_time, config.resolution)
    capital = float(config.initial_capital)
    pieces, equity, position, rows = [], [], [], []
    refused = np.zeros(4, np.int64)
    for choice in choices:
        w = choice.window
        (train_start, _), (start, end) = w.train, w.test
        row = {"window": w.index, "train_start": open_time[train_start], "train_end": open_time[w.train[1] - 1],
               "test_start": open_time[start], "test_end": open_time[end - 1],
               "params": None, "in_sample": choice.in_sample}  # fmt: skip
        chosen = choice.params
        if chosen is None or capital <= 0:
            # Nothing chosen (every combination failed) or nothing left: the window stays in cash.
            equity.append(np.full(end - start, capital))
            position.append(np.zeros(end - start, np.int8))
            rows.append(row | {"out_of_sample": None, "net_pnl": 0.0, "trades": 0, "return_pct": 0.0})
            continue
        span = candles.slice(train_start, end - train_start)
        signals = choice.test_signals
        if signals is None or signals.height != end - start:
            signals = compute_signals(strategy, span, chosen).slice(start - train_start)
        cfg = replace(config, initial_capital=capital)
        trades, ref, stats, curves = run_kernel(
            span.slice(start - train_start), signals, cfg, None, candle_ms
        )
        if curves is None:  # keep_curves defaults to True
            raise AssertionError("run_kernel returned no curves for a walk-forward window")
        window_metrics = compute_metrics(trades, stats, n_candles=end - start, initial_capital=capital,
                                         candle_ms=candle_ms, refused=ref)  # fmt: skip
        shifted = trades.copy()
        shifted[k.T_ENTRY_IDX] += start
        shifted[k.T_EXIT_IDX] += start
        pieces.append(shifted)
        equity.append(curves[0].copy())
        position.append(curves[3].copy())
        refused += ref
        rows.append(row | {"params": dict(chosen), "out_of_sample": window_metrics.get(metric),
                           "net_pnl": window_metrics["netPnl"], "trades": window_metrics["totalTrades"],
                           "return_pct": window_metrics["totalPnlPct"]})  # fmt: skip
        capital = window_metrics["finalCapital"]
    first = choices[0].window.test[0]
    last = choices[-1].window.test[1]
    trades = np.concatenate(pieces, axis=1) if pieces else np.empty((k.N_TRADE_FIELDS, 0))
    curve = np.concatenate(equity)
    held = np.concatenate(position)
    base = float(config.initial_capital)
    stats = curve_stats(curve, held, base)
    metrics = compute_metrics(trades, stats, n_candles=curve.shape[0], initial_capital=base, candle_ms=candle_ms,
                              refused=refused)  # fmt: skip
    metrics["resolution"] = config.resolution or f"{candle_ms // 60_000}m"
    peak = np.maximum.accumulate(np.concatenate(([base], curve)))[1:]
    test = candles.slice(first, last - first)
    equity_frame = pl.DataFrame(
        {
            "open_time": test.get_column("open_time").cast(pl.Datetime("ms", "UTC")),
            "close": test.get_column("close"),
            "equity": curve,
            "drawdown": peak - curve,
            "drawdown_pct": np.where(peak > 0, (peak - curve) / peak * 100, 0.0),
            "position": held,
        }
    )
    # Trade indices relative to the stitched span, as a single backtest's are to its candles.
    local = trades.copy()
    local[k.T_ENTRY_IDX] -= first
    local[k.T_EXIT_IDX] -= first
    oos = BacktestResult(
        strategy=strategy.code,
        params={"walk_forward": [r["params"] for r in rows]},
        config=config,
        trades=trades_frame(local, open_time[first:last], candle_ms),
        equity=equity_frame,
        metrics=metrics,
        span=(int(open_time[first]), int(open_time[last - 1])),
        candle_ms=candle_ms,
    )
    table = pl.DataFrame(
        [r | {"params": str(r["params"]) if r["params"] is not None else None} for r in rows],
        schema_overrides={
            c: pl.Datetime("ms", "UTC") for c in ("train_start", "train_end", "test_start", "test_end")
        },
    )
    warnings = [m for c in choices for m in c.warnings]
    return WalkForwardResult(table, list(choices), oos, metric, warnings)


def run_walk_forward(
    candles: pl.DataFrame,
    strategy: Strategy,
    grid: Mapping[str, Sequence[Any]],
    config: SimulationConfig,
    *,
    base_params: Mapping[str, Any] | None = None,
    metric: str = "sharpeRatio",
    windows: int = 10,
    train_ratio: float = 3.0,
    anchored: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WalkForwardResult:
    candles = normalized(candles)
    plan = make_windows(candles.height, windows, train_ratio, anchored=anchored)
    choices = train_windows(candles, strategy, grid, config, plan, base_params=base_params, metric=metric,
                            workers=workers, progress=progress)  # fmt: skip
    return out_of_sample(candles, strategy, choices, config, metric=metric)
