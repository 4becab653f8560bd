"""Backtest metrics: the seed's 18 fields plus the ratios peers report. JSON-safe by construction.

Conventions (the seed did not define them; chosen and fixed here):
- Money fields are in the quote currency; `*Pct` fields and `winRate`, `exposurePct`, `cagrPct` are
  percentages (0-100).
- Units of every field: `METRIC_UNITS` below. `totalPnl` (seed name) is GROSS, `totalPnlPct` NET;
  `grossPnl`, `grossPnlPct`, `netPnlPct`, `*Seconds` and `spanDays` say so in their names.
- `totalPnl` is the price P&L before fees, `totalCommission` the fees of both sides of every trade,
  `netPnl = totalPnl - totalCommission`, `finalCapital = initialCapital + netPnl`,
  `totalPnlPct = netPnl / initialCapital × 100`. Wins/losses use the net P&L of a trade
  (break-even trades count as neither). `avgLoss` and `largestLoss` are negative numbers.
- `sharpeRatio` = mean(r) / stdev(r) × sqrt(P), where r are the per-candle simple returns of the
  mark-to-market equity curve (flat candles included, stdev with ddof=1) and P the candles per
  year (365 days × 24 h / resolution; crypto trades every day). It differs from the seed's
  trade-based Sharpe (mean / stdev of per-trade returns, not annualised), which ignores time
  in the market and holding periods; that one is reported as `tradeSharpe`.
- `sortinoRatio` = mean(r) / sqrt(mean(min(r, 0)²)) × sqrt(P); `calmarRatio` = CAGR / max
  drawdown %; `sqn` = sqrt(N) × mean(trade P&L) / stdev(trade P&L); `expectancy` = mean net
  P&L per trade.
- Undefined values are never NaN/inf: a ratio whose denominator is 0 is 0 when its numerator is
  0 too (no trades, flat equity), and `null` when the numerator is positive (e.g. profitFactor
  with no losing trade, Sortino with no down candle): unbounded, stated as "no value".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xcoin_trading.backtest.kernel import (
    N_STATS,
    S_DOWNSIDE,
    S_EXPOSED_CANDLES,
    S_MAX_DD,
    S_MAX_DD_CANDLES,
    S_MAX_DD_PCT,
    S_MEAN_R,
    S_STD_R,
    T_AMBIGUOUS,
    T_ENTRY_FEE,
    T_ENTRY_IDX,
    T_ENTRY_PRICE,
    T_EXIT_FEE,
    T_EXIT_IDX,
    T_INTRABAR,
    T_PNL,
    T_QTY,
    T_SIDE,
)

YEAR_MS = 365 * 86_400_000

SEED_FIELDS = (
    "totalTrades",
    "winningTrades",
    "losingTrades",
    "winRate",
    "totalPnl",
    "totalPnlPct",
    "avgWin",
    "avgLoss",
    "largestWin",
    "largestLoss",
    "profitFactor",
    "sharpeRatio",
    "maxDrawdown",
    "maxDrawdownPct",
    "averageTradeDuration",
    "totalCommission",
    "netPnl",
    "finalCapital",
)


def _ratio(num: float, den: float) -> float | None:
    if den > 0:
        return num / den
    return 0.0 if num <= 0 else None


def json_safe(value: Any) -> Any:
    """NaN/inf become None, numpy scalars plain Python: what every stored JSON goes through."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def curve_stats(equity: np.ndarray, position: np.ndarray, initial_capital: float) -> np.ndarray:
    """The kernel's equity statistics (`S_*`) recomputed from a stitched curve, same definitions."""
    stats = np.zeros(N_STATS)
    n = equity.shape[0]
    if n == 0:
        return stats
    prev = np.concatenate(([initial_capital], equity[:-1]))
    r = np.where(prev > 0, equity / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)
    stats[S_MEAN_R] = r.mean()
    stats[S_STD_R] = r.std(ddof=1) if n > 1 else 0.0
    stats[S_DOWNSIDE] = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    peak = np.maximum.accumulate(np.concatenate(([initial_capital], equity)))[1:]
    dd = peak - equity
    stats[S_MAX_DD] = dd.max()
    stats[S_MAX_DD_PCT] = np.where(peak > 0, dd / np.where(peak > 0, peak, 1.0) * 100, 0.0).max()
    under = np.concatenate(([0], (equity < peak).view(np.int8), [0]))
    edges = np.diff(under)
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    stats[S_MAX_DD_CANDLES] = runs.max(initial=0)
    stats[S_EXPOSED_CANDLES] = np.count_nonzero(position)
    return stats


def compute_metrics(
    trades: np.ndarray,
    stats: np.ndarray,
    *,
    n_candles: int,
    initial_capital: float,
    candle_ms: int,
    refused: np.ndarray,
) -> dict[str, Any]:
    """Metrics from the kernel's raw outputs (trade matrix, equity statistics `S_*`)."""
    # Every sweep and walk-forward cell runs this (thousands of times on small trade arrays), so
    # each reduction is done once; the values are the same numpy reductions as ever (same bits).
    mean_r, std_r, downside = float(stats[S_MEAN_R]), float(stats[S_STD_R]), float(stats[S_DOWNSIDE])
    max_dd, max_dd_pct, max_dd_candles = (
        float(stats[S_MAX_DD]),
        float(stats[S_MAX_DD_PCT]),
        int(stats[S_MAX_DD_CANDLES]),
    )
    pnl = trades[T_PNL]
    fees = trades[T_ENTRY_FEE] + trades[T_EXIT_FEE]
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    n = pnl.shape[0]
    n_wins, n_losses = wins.shape[0], losses.shape[0]
    total_commission = float(fees.sum())
    net = float(pnl.sum())
    gross_sum = float((pnl + fees).sum())
    final = initial_capital + net
    periods_per_year = YEAR_MS / candle_ms
    years = n_candles * candle_ms / YEAR_MS
    cagr: float | None
    if final <= 0:
        cagr = -100.0
    elif years > 0:
        growth = math.log(final / initial_capital) / years
        # A short span annualises to an astronomic figure: beyond e^700 it has no value.
        cagr = math.expm1(growth) * 100 if growth < 700 else None
    else:
        cagr = 0.0
    if n:
        held = trades[T_EXIT_IDX] - trades[T_ENTRY_IDX]
        duration_s = float((held * candle_ms).mean() / 1000)
        duration_candles = float(held.mean())
        trade_returns = pnl / (trades[T_QTY] * trades[T_ENTRY_PRICE])
        side = trades[T_SIDE]
        longs = int(np.count_nonzero(side > 0))
        shorts = int(np.count_nonzero(side < 0))
        ambiguous = int(np.count_nonzero(trades[T_AMBIGUOUS]))
        intrabar = int(np.count_nonzero(trades[T_INTRABAR]))
    else:
        trade_returns = pnl
        duration_s = duration_candles = 0.0
        longs = shorts = ambiguous = intrabar = 0
    pnl_std = float(pnl.std(ddof=1)) if n > 1 else 0.0
    tr_std = float(trade_returns.std(ddof=1)) if n > 1 else 0.0
    max_dd_s = float(max_dd_candles * candle_ms / 1000)

    metrics: dict[str, Any] = {
        "totalTrades": int(n),
        "winningTrades": int(n_wins),
        "losingTrades": int(n_losses),
        "winRate": n_wins / n * 100 if n else 0.0,
        "totalPnl": gross_sum,
        "totalPnlPct": net / initial_capital * 100,
        "avgWin": float(wins.mean()) if n_wins else 0.0,
        "avgLoss": float(losses.mean()) if n_losses else 0.0,
        "largestWin": float(wins.max()) if n_wins else 0.0,
        "largestLoss": float(losses.min()) if n_losses else 0.0,
        "profitFactor": _ratio(float(wins.sum()), float(-losses.sum())),
        "sharpeRatio": mean_r / std_r * math.sqrt(periods_per_year) if std_r > 0 else 0.0,
        "maxDrawdown": max_dd,
        "maxDrawdownPct": max_dd_pct,
        "averageTradeDuration": duration_s,  # seconds
        "totalCommission": total_commission,
        "netPnl": net,
        "finalCapital": final,
        # Beyond the seed.
        "initialCapital": initial_capital,
        "sortinoRatio": None
        if (downside == 0 and mean_r > 0)
        else (mean_r / downside * math.sqrt(periods_per_year) if downside > 0 else 0.0),
        "calmarRatio": None if cagr is None else _ratio(cagr, max_dd_pct),
        "cagrPct": cagr,
        "expectancy": net / n if n else 0.0,
        "sqn": math.sqrt(n) * float(pnl.mean()) / pnl_std if pnl_std > 0 else 0.0,
        "tradeSharpe": float(trade_returns.mean()) / tr_std if tr_std > 0 else 0.0,
        "exposurePct": float(stats[S_EXPOSED_CANDLES]) / n_candles * 100 if n_candles else 0.0,
        "maxDrawdownDuration": max_dd_s,  # seconds
        "maxDrawdownDurationCandles": max_dd_candles,
        "averageTradeDurationCandles": duration_candles,
        "longTrades": longs,
        "shortTrades": shorts,
        "ambiguousCandles": ambiguous,
        "intrabarResolved": intrabar,
        "refusedEntries": int(refused.sum()),
        "candles": int(n_candles),
        # Explicit twins of seed fields whose names mislead (the seed's names stay as they are).
        "grossPnl": gross_sum,
        "grossPnlPct": gross_sum / initial_capital * 100,
        "netPnlPct": net / initial_capital * 100,
        "averageTradeDurationSeconds": duration_s,
        "maxDrawdownDurationSeconds": max_dd_s,
        "spanDays": n_candles * candle_ms / 86_400_000,
    }
    # Plain Python numbers only (built that way above): just the non-finite floats become None.
    return {
        name: None if value.__class__ is float and not math.isfinite(value) else value
        for name, value in metrics.items()
    }


# Unit of every metric (money is the quote currency, e.g. USDT). `totalPnl` is GROSS (before fees)
# while `totalPnlPct` is NET: the seed's names, kept; `grossPnl`/`netPnlPct` say it outright.
METRIC_UNITS: dict[str, str] = {
    "totalTrades": "count", "winningTrades": "count", "losingTrades": "count", "winRate": "% of trades",
    "totalPnl": "quote, gross (before fees)", "totalPnlPct": "% of initial capital, net (after fees)",
    "avgWin": "quote, net", "avgLoss": "quote, net (negative)", "largestWin": "quote, net",
    "largestLoss": "quote, net (negative)", "profitFactor": "ratio (null: no losing trade)",
    "sharpeRatio": "annualised, per-candle equity returns", "maxDrawdown": "quote",
    "maxDrawdownPct": "% of the peak", "averageTradeDuration": "seconds", "totalCommission": "quote",
    "netPnl": "quote, net", "finalCapital": "quote", "initialCapital": "quote",
    "sortinoRatio": "annualised", "calmarRatio": "ratio (cagrPct / maxDrawdownPct)",
    "cagrPct": "% per year, compounded (extrapolated when spanDays < 365)", "expectancy": "quote per trade, net",
    "sqn": "ratio", "tradeSharpe": "ratio, per trade, not annualised", "exposurePct": "% of candles",
    "maxDrawdownDuration": "seconds", "maxDrawdownDurationCandles": "candles",
    "averageTradeDurationCandles": "candles", "longTrades": "count", "shortTrades": "count",
    "ambiguousCandles": "count", "intrabarResolved": "count", "refusedEntries": "count", "candles": "count",
    "grossPnl": "quote, gross (= totalPnl)", "grossPnlPct": "% of initial capital, gross",
    "netPnlPct": "% of initial capital, net (= totalPnlPct)", "averageTradeDurationSeconds": "seconds",
    "maxDrawdownDurationSeconds": "seconds", "spanDays": "days", "resolution": "the candles' resolution",
}  # fmt: skip
