"""What a trader reads beside the equity curve, computed once for the HTML, the PNG and the Dagster
Markdown: buy & hold of the same market as the benchmark, the metrics of both side by side, monthly
returns, the deepest drawdown periods and a human trade list (the layout of quantstats' tearsheet
and vectorbt's trade plot, trimmed to what a single-market backtest has).

Buy & hold: all-in at the first candle's close with the backtest's commission, held to the last
close, sold there with the commission (1×, no leverage), so both curves pay for their fills alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from xcoin_trading.backtest.metrics import YEAR_MS, json_safe

TOP_DRAWDOWNS = 5
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COMPARED = (
    ("totalReturnPct", "Total return %"),
    ("cagrPct", "CAGR %"),
    ("sharpeRatio", "Sharpe"),
    ("sortinoRatio", "Sortino"),
    ("volatilityPct", "Volatility (ann.) %"),
    ("maxDrawdownPct", "Max drawdown %"),
    ("longestDrawdown", "Longest drawdown"),
    ("finalValue", "Final value"),
)


def human_duration(seconds: float | None) -> str:
    """`2 d 4 h`, `3 h 05 min`, `45 min`, `30 s`: the two largest units, as a trader says it."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def utc_text(ms: int | float | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def buy_and_hold(close: np.ndarray, initial_capital: float, fee: float) -> np.ndarray:
    """Mark-to-market equity of buying at the first close and selling at the last (fees both sides)."""
    if close.shape[0] == 0:
        return close.astype(np.float64)
    qty = initial_capital / (close[0] * (1 + fee))
    curve = qty * close
    curve[-1] -= fee * qty * close[-1]
    return curve


def curve_metrics(
    equity: np.ndarray, initial_capital: float, candle_ms: int, time_ms: np.ndarray | None = None
) -> dict[str, Any]:
    """Return, CAGR, Sharpe, Sortino, volatility and drawdowns of any equity curve, computed the
    way `metrics.py` does for the strategy (per-candle simple returns, the first against the
    initial capital, 365-day years), so the two columns compare like for like."""
    n = equity.shape[0]
    if n == 0:
        return {k: 0.0 for k, _ in COMPARED}
    prev = np.concatenate(([initial_capital], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, equity / prev - 1.0, 0.0)
    per_year = YEAR_MS / candle_ms
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    final = float(equity[-1])
    years = n * candle_ms / YEAR_MS
    if final <= 0:
        cagr: float | None = -100.0
    else:
        growth = math.log(final / initial_capital) / years if years > 0 else 0.0
        cagr = math.expm1(growth) * 100 if growth < 700 else None
    peak = np.maximum.accumulate(np.concatenate(([initial_capital], equity)))[1:]
    dd_pct = np.where(peak > 0, (peak - equity) / peak * 100, 0.0)
    starts, ends = _underwater(equity, initial_capital)
    # A drawdown lasts from its peak candle to its recovery candle (or the last candle).
    t = np.arange(n, dtype=np.int64) * candle_ms if time_ms is None else time_ms  # real times: gaps count
    longest = (t[np.minimum(ends, n - 1)] - t[np.maximum(starts - 1, 0)]).max(initial=0) / 1000
    return json_safe(
        {
            "totalReturnPct": (final / initial_capital - 1) * 100,
            "cagrPct": cagr,
            "sharpeRatio": mean / std * math.sqrt(per_year) if std > 0 else 0.0,
            "sortinoRatio": None
            if (down == 0 and mean > 0)
            else (mean / down * math.sqrt(per_year) if down else 0.0),
            "volatilityPct": std * math.sqrt(per_year) * 100,
            "maxDrawdownPct": float(dd_pct.max()),
            "longestDrawdown": float(longest),
            "finalValue": final,
        }
    )


def _underwater(equity: np.ndarray, initial_capital: float) -> tuple[np.ndarray, np.ndarray]:
    """Runs of candles below the running peak: first candle below, first candle back (n: never)."""
    peak = np.maximum.accumulate(np.concatenate(([initial_capital], equity)))
    under = (equity < peak[1:]).view(np.int8)
    edges = np.diff(np.concatenate(([0], under, [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def drawdown_periods(
    equity: np.ndarray, initial_capital: float, time_ms: np.ndarray, *, top: int = TOP_DRAWDOWNS
) -> list[dict[str, Any]]:
    """The `top` deepest drawdowns: peak (start), trough, recovery (None: not recovered by the end),
    depth % from the peak and durations. One vectorised pass: fine for millions of candles."""
    n = equity.shape[0]
    if n == 0:
        return []
    peak = np.maximum.accumulate(np.concatenate(([initial_capital], equity)))
    starts, ends = _underwater(equity, initial_capital)
    if starts.shape[0] == 0:
        return []
    troughs_val = np.minimum.reduceat(equity, starts)
    peaks_val = peak[starts + 1]
    depth = np.where(peaks_val > 0, (peaks_val - troughs_val) / peaks_val * 100, 0.0)
    order = np.argsort(-depth, kind="stable")[:top]
    out = []
    for j in order:
        s, e = int(starts[j]), int(ends[j])
        trough = s + int(np.argmin(equity[s:e]))
        peak_ms = int(time_ms[s - 1]) if s > 0 else int(time_ms[0])
        recovered = e < n
        end_ms = int(time_ms[e]) if recovered else int(time_ms[-1])
        out.append(
            {
                "start_ms": peak_ms,
                "trough_ms": int(time_ms[trough]),
                "recovery_ms": int(time_ms[e]) if recovered else None,
                "depth_pct": float(depth[j]),
                "duration_s": (end_ms - peak_ms) / 1000,
                "recovery_s": (int(time_ms[e]) - int(time_ms[trough])) / 1000 if recovered else None,
            }
        )
    return out


def monthly_returns(open_time: pl.Series, equity: np.ndarray, initial_capital: float) -> pl.DataFrame:
    """year, month, return % of each calendar month (UTC): its last equity against the previous
    month's last (the first month against the initial capital)."""
    frame = pl.DataFrame({"t": open_time, "equity": equity}).with_columns(
        pl.col("t").dt.year().alias("year"), pl.col("t").dt.month().alias("month")
    )
    last = frame.group_by("year", "month", maintain_order=True).agg(pl.col("equity").last())
    prev = last.get_column("equity").shift(1, fill_value=initial_capital)
    return last.with_columns(((pl.col("equity") / prev - 1) * 100).alias("return_pct")).select(
        "year", "month", "return_pct"
    )


def monthly_grid(months: pl.DataFrame) -> list[tuple[int, list[float | None], float]]:
    """Rows (year, 12 monthly returns or None, the year's compounded return) for a heat map."""
    rows = []
    for year in sorted(set(months.get_column("year").to_list())):
        cells: list[float | None] = [None] * 12
        growth = 1.0
        for m, r in months.filter(pl.col("year") == year).select("month", "return_pct").iter_rows():
            cells[m - 1] = r
            growth *= 1 + r / 100
        rows.append((year, cells, (growth - 1) * 100))
    return rows


def trade_rows(trades: pl.DataFrame, limit: int | None = None) -> list[dict[str, Any]]:
    """The trade list as read: times, prices, fees, P&L and %, duration in human units."""
    shown = trades if limit is None else trades.head(limit)
    out = []
    for r in shown.iter_rows(named=True):
        seconds = (r["exit_time"] - r["entry_time"]).total_seconds()
        out.append(
            {
                "#": r["trade_id"],
                "side": r["side"],
                "entry": r["entry_time"].strftime("%Y-%m-%d %H:%M"),
                "exit": r["exit_time"].strftime("%Y-%m-%d %H:%M"),
                "duration": human_duration(seconds),
                "entry price": r["entry_price"],
                "exit price": r["exit_price"],
                "quantity": r["quantity"],
                "fees": r["entry_fee"] + r["exit_fee"],
                "P&L": r["pnl"],
                "P&L %": r["pnl_pct"],
                "reason": r["exit_reason"],
            }
        )
    return out


@dataclass
class Tearsheet:
    inputs: list[tuple[str, str]]
    strategy: dict[str, Any]
    benchmark: dict[str, Any]
    benchmark_curve: np.ndarray
    months: list[tuple[int, list[float | None], float]]
    drawdowns: list[dict[str, Any]]


def inputs_of(result) -> list[tuple[str, str]]:
    """The header: what was run, on what, with which money and fill rules."""
    cfg = result.config
    src = getattr(result, "source", None) or {}
    market = cfg.market.symbol if cfg.market else (src.get("symbol") or src.get("data_file") or "—")
    params = ", ".join(f"{k}={v}" for k, v in result.params.items()) or "defaults"
    slip = []
    if getattr(cfg, "slippage", 0):
        slip.append(f"{float(cfg.slippage) * 1e4:g} bps")
    if getattr(cfg, "slippage_range", 0):
        slip.append(f"{float(cfg.slippage_range):g} × candle range")
    return [
        ("Strategy", result.strategy),
        ("Parameters", params),
        ("Market", f"{market} {result.metrics.get('resolution', '')}".strip()),
        ("Period (UTC)", f"{utc_text(result.span[0])} → {utc_text(result.span[1] + result.candle_ms)}"),
        ("Capital", f"{float(cfg.initial_capital):,.2f}, risk {float(cfg.risk_per_trade) * 100:g} % per trade, "
                    f"leverage {float(cfg.leverage):g}×"),
        ("Fees", f"{float(cfg.commission) * 100:g} % of notional per side"),
        ("Fills", f"entry/exit at the signal candle's close; stops: gap fill '{cfg.gap_fill}', same-candle rule "
                  f"'{cfg.intrabar}'; slippage {' + '.join(slip) or 'none'}"),
    ]  # fmt: skip


def build(result) -> Tearsheet:
    eq = result.equity
    capital = float(result.config.initial_capital)
    equity = eq.get_column("equity").to_numpy()
    bench = buy_and_hold(
        eq.get_column("close").to_numpy().astype(np.float64), capital, float(result.config.commission)
    )
    t = eq.get_column("open_time")
    time_ms = t.dt.epoch("ms").to_numpy()
    return Tearsheet(
        inputs=inputs_of(result),
        strategy=curve_metrics(equity, capital, result.candle_ms, time_ms),
        benchmark=curve_metrics(bench, capital, result.candle_ms, time_ms),
        benchmark_curve=bench,
        months=monthly_grid(monthly_returns(t, equity, capital)),
        drawdowns=drawdown_periods(equity, capital, time_ms),
    )


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def compared_value(key: str, v: Any) -> str:
    return human_duration(v) if key == "longestDrawdown" else _num(v)


def markdown(
    result, *, sheet: Tearsheet | None = None, chart_png_b64: str | None = None, trades: int = 20
) -> str:
    """The tearsheet as Markdown (Dagster metadata, a terminal, a PR): same content as the HTML."""
    sheet = sheet or build(result)
    lines = [f"### {result.strategy} vs buy & hold", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sheet.inputs] + [""]
    if chart_png_b64:
        lines += [f"![price, trades, equity vs buy & hold](data:image/png;base64,{chart_png_b64})", ""]
    lines += ["| Metric | Strategy | Buy & hold |", "|---|---:|---:|"]
    lines += [f"| {label} | {compared_value(k, sheet.strategy.get(k))} | {compared_value(k, sheet.benchmark.get(k))} |"
              for k, label in COMPARED]  # fmt: skip
    lines += ["", "**Monthly returns %**", "", "| Year | " + " | ".join(MONTHS) + " | Year |",
              "|---|" + "---:|" * 13]  # fmt: skip
    for year, cells, total in sheet.months:
        lines.append(
            f"| {year} | "
            + " | ".join(_num(c, 1) if c is not None else "" for c in cells)
            + f" | {total:.1f} |"
        )
    lines += [
        "",
        "**Worst drawdowns**",
        "",
        "| Peak | Trough | Recovered | Depth % | Length |",
        "|---|---|---|---:|---|",
    ]
    for d in sheet.drawdowns:
        rec = utc_text(d["recovery_ms"]) if d["recovery_ms"] is not None else "not yet"
        lines.append(f"| {utc_text(d['start_ms'])} | {utc_text(d['trough_ms'])} | {rec} | {d['depth_pct']:.2f} | "
                     f"{human_duration(d['duration_s'])} |")  # fmt: skip
    rows = trade_rows(result.trades, trades)
    if rows:
        lines += ["", f"**Trades** (first {len(rows)} of {result.trades.height})", ""]
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(_num(v, 4) if isinstance(v, float) else str(v) for v in r.values()) + " |"
                  for r in rows]  # fmt: skip
    return "\n".join(lines) + "\n"
