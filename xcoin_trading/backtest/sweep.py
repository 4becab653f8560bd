"""Parameter sweeps: every combination of a grid, run in parallel threads, ranked by one metric,
optionally on an in-sample part with the rest held out (`oos_fraction`).

Threads, not processes: the kernel releases the GIL (`nogil=True`) and polars computes outside
it, so both cores work without copying the candles into worker processes. Each combination's
signals are what a backtest of it would trade: a built-in with a kernel rule has them computed in
the walk from indicators shared between combinations (one `IndicatorMemo` per candle frame), one
with kernel-form signals gets those (`engine.kernel_signals`), any other strategy goes through
`compute_signals`, as live runs it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from xcoin_trading.backtest.engine import (
    LevelsOutsideContract,
    SimulationConfig,
    infer_candle_ms,
    kernel_rule,
    kernel_signals,
    normalized,
    run_kernel,
    slice_signals,
)
from xcoin_trading.backtest.inputs import rule_sums
from xcoin_trading.backtest.metrics import compute_metrics
from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy import Strategy
from xcoin_trading.strategy.builtin._common import IndicatorMemo

MAX_COMBINATIONS = 10_000
LOWER_IS_BETTER = {
    "maxDrawdown",
    "maxDrawdownPct",
    "maxDrawdownDuration",
    "maxDrawdownDurationCandles",
    "totalCommission",
    "ambiguousCandles",
}
RANKING_COLUMNS = (
    "totalTrades",
    "winRate",
    "netPnl",
    "totalPnlPct",
    "sharpeRatio",
    "sortinoRatio",
    "calmarRatio",
    "profitFactor",
    "maxDrawdownPct",
    "expectancy",
    "sqn",
    "finalCapital",
)


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), not the host's count: one thread per
    core the scheduler gives us."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1


def parse_grid(text: str) -> dict[str, list[Any]]:
    """`fast=10,20,30;slow=50,100` → {"fast": ["10", "20", "30"], "slow": ["50", "100"]}.

    Values stay strings; the strategy's parameter types coerce them. `a:b:step` is a range.
    """
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ValidationError(
                "grid", f"each entry must look like name=v1,v2 or name=start:stop:step, got {part!r}"
            )
        name = name.strip()
        if values.count(":") == 2:
            try:
                start, stop, step = (float(v) for v in values.split(":"))
            except ValueError:
                raise ValidationError(
                    f"grid.{name}", f"range must be numbers start:stop:step, got {values!r}"
                ) from None
            if step <= 0 or stop < start:
                raise ValidationError(
                    f"grid.{name}", f"range needs step > 0 and stop >= start, got {values!r}"
                )
            count = int(round((stop - start) / step)) + 1
            values_ = [round(start + i * step, 12) for i in range(count)]
            integral = all(float(v).is_integer() for v in (start, stop, step))
            grid[name] = [int(v) for v in values_] if integral else values_
        else:
            grid[name] = [v.strip() for v in values.split(",") if v.strip()]
    if not grid:
        raise ValidationError("grid", "is empty: give at least one parameter, e.g. fast=10,20")
    return grid


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValidationError("grid", "every parameter needs at least one value")
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > MAX_COMBINATIONS:
        raise ValidationError("grid", f"has {count} combinations; the limit is {MAX_COMBINATIONS}")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def check_metric(metric: str) -> None:
    if metric not in RANKING_COLUMNS and metric not in LOWER_IS_BETTER:
        allowed = sorted(set(RANKING_COLUMNS) | LOWER_IS_BETTER)
        raise ValidationError("metric", f"must be one of {allowed}, got {metric!r}")


def check_grid(strategy: Strategy, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    combos = combinations(grid)
    # Unknown names fail once, up front, rather than once per combination.
    unknown = sorted(set(grid) - set(strategy.default_params)) if strategy.default_params else []
    if unknown:
        raise ValidationError("grid", f"unknown parameter(s) {unknown} for {strategy.code}")
    return combos


def score(
    strategy: Strategy,
    candles: pl.DataFrame,
    params: Mapping[str, Any],
    config: SimulationConfig,
    candle_ms: int,
    memo: IndicatorMemo | None = None,
) -> dict[str, Any]:
    """One backtest's metrics, without curves: what every sweep and walk-forward cell runs
    (`memo`: indicators shared by the cells on these same candles). A built-in with a kernel rule
    computes its signals in the walk, from the memo's shared sums; the frame path otherwise (and
    to name a row whose levels break the contract)."""
    rule = kernel_rule(strategy, dict(params), config)
    out = None
    if rule is not None:
        sums = rule_sums(strategy, candles, dict(params), memo) if memo is not None else None
        with contextlib.suppress(LevelsOutsideContract):  # the frame path below names the row
            out = run_kernel(candles, rule, config, None, candle_ms, keep_curves=False, sma_sums=sums)
    if out is None:
        signals = kernel_signals(strategy, candles, dict(params), config, memo)
        out = run_kernel(candles, signals, config, None, candle_ms, keep_curves=False)
    trades, refused, stats, _ = out
    return compute_metrics(
        trades,
        stats,
        n_candles=candles.height,
        initial_capital=float(config.initial_capital),
        candle_ms=candle_ms,
        refused=refused,
    )


def better(metric: str, a: float | None, b: float | None) -> bool:
    """Is `a` a better value of `metric` than `b` (None: worst)."""
    if a is None:
        return False
    if b is None:
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def rank(rows: list[dict[str, Any]], grid: Mapping[str, Sequence[Any]], metric: str) -> pl.DataFrame:
    schema = {f"param_{n}": pl.String for n in grid} | {c: pl.Float64 for c in RANKING_COLUMNS}
    schema |= {metric: pl.Float64, "error": pl.String, "totalTrades": pl.Int64}
    extra = {c: pl.Float64 for row in rows for c in row if c.startswith("oos_") and c not in schema}
    frame = pl.DataFrame(rows, schema=schema | extra, strict=False)
    frame = frame.sort(metric, descending=metric not in LOWER_IS_BETTER, nulls_last=True)
    return frame.with_row_index("rank", offset=1)


def edge_warnings(grid: Mapping[str, Sequence[Any]], best: Mapping[str, Any]) -> list[str]:
    """The best set sitting on the edge of a numeric grid axis (of 3+ values) may have its optimum
    outside the grid: say which parameter and which way to widen it."""
    out = []
    for name, values in grid.items():
        try:
            numbers = sorted({float(v) for v in values})
            chosen = float(best[name])
        except (TypeError, ValueError, KeyError):
            continue
        if len(numbers) < 3:
            continue
        if chosen == numbers[0]:
            out.append(f"best {name}={best[name]} is the grid's lowest value: widen the grid below it")
        elif chosen == numbers[-1]:
            out.append(f"best {name}={best[name]} is the grid's highest value: widen the grid above it")
    return out


def run_sweep(
    candles: pl.DataFrame,
    strategy: Strategy,
    grid: Mapping[str, Sequence[Any]],
    config: SimulationConfig,
    *,
    base_params: Mapping[str, Any] | None = None,
    metric: str = "sharpeRatio",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    oos_fraction: float = 0.0,
) -> pl.DataFrame:
    """One row per combination, best first by `metric`; invalid combinations keep their error.

    `oos_fraction` > 0 holds the last part of the candles out: combinations are ranked on the
    first part only, and each is also scored on the held-out part (`oos_*` columns; its signals
    see the in-sample candles as warm-up, never the other way round).
    """
    check_metric(metric)
    combos = check_grid(strategy, grid)
    if not 0 <= oos_fraction < 1:
        raise ValidationError("oos_fraction", f"must be in [0, 1), got {oos_fraction}")
    candles = normalized(candles)
    candle_ms = infer_candle_ms(candles.get_column("open_time").to_numpy(), config.resolution)
    split = candles.height - int(round(candles.height * oos_fraction)) if oos_fraction else candles.height
    if oos_fraction and (split < 2 or split > candles.height - 2):
        raise ValidationError(
            "oos_fraction", f"leaves {split} of {candles.height} candles in sample: too few"
        )
    in_sample = candles.slice(0, split)
    memo, whole_memo = IndicatorMemo(), IndicatorMemo()

    def one(combo: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {f"param_{n}": str(v) for n, v in combo.items()}
        try:
            params = strategy.resolve_params({**(base_params or {}), **combo})
        except ValidationError as exc:
            return row | {"error": str(exc)}
        metrics = score(strategy, in_sample, params, config, candle_ms, memo)
        row |= {c: metrics[c] for c in RANKING_COLUMNS} | {metric: metrics[metric], "error": None}
        if split < candles.height:
            oos = score_span(
                strategy, candles, params, config, candle_ms, split, candles.height, memo=whole_memo
            )
            row |= {
                f"oos_{c}": oos[c] for c in (metric, "netPnl", "totalPnlPct", "totalTrades", "maxDrawdownPct")
            }
        return row

    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, row in enumerate(pool.map(one, combos), start=1):
            rows.append(row)
            if progress is not None:
                progress(done, len(combos))
    return rank(rows, grid, metric)


def score_span(
    strategy: Strategy,
    candles: pl.DataFrame,
    params: Mapping[str, Any],
    config: SimulationConfig,
    candle_ms: int,
    start: int,
    end: int,
    *,
    warmup_from: int = 0,
    memo: IndicatorMemo | None = None,
) -> dict[str, Any]:
    """Metrics of candles[start:end] traded alone (flat at `start`), its signals computed on
    candles[warmup_from:end] so indicators are warm: nothing after `end` is ever seen. `memo`
    holds indicators of exactly candles[warmup_from:end]."""
    span = candles.slice(warmup_from, end - warmup_from)
    signals = kernel_signals(strategy, span, dict(params), config, memo)
    part = start - warmup_from
    trades, refused, stats, _ = run_kernel(
        span.slice(part), slice_signals(signals, part), config, None, candle_ms, keep_curves=False
    )
    return compute_metrics(
        trades,
        stats,
        n_candles=end - start,
        initial_capital=float(config.initial_capital),
        candle_ms=candle_ms,
        refused=refused,
    )
