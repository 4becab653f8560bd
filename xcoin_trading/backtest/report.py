"""Backtest reports: a PNG equity/drawdown chart and a self-contained HTML page.

Long curves are bucketed before plotting (2,000 buckets: close, low and worst drawdown of each),
so a 5M-candle chart renders in well under a second and still shows every drawdown.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xcoin_trading.backtest.engine import BacktestResult
from xcoin_trading.backtest.metrics import SEED_FIELDS

MAX_POINTS = 2000
MAX_TRADE_ROWS = 500


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    png: Path


def _buckets(equity: np.ndarray, dd_pct: np.ndarray, t: np.ndarray):
    n = equity.shape[0]
    if n <= MAX_POINTS:
        return t, equity, equity, dd_pct
    edges = np.linspace(0, n, MAX_POINTS + 1).astype(np.int64)
    starts = edges[:-1]
    ends = edges[1:] - 1
    low = np.minimum.reduceat(equity, starts)
    worst = np.maximum.reduceat(dd_pct, starts)
    return t[ends], equity[ends], low, worst


def render_chart(result: BacktestResult, path: Path, *, dpi: int = 80) -> Path:
    """Equity (with each bucket's low) above, drawdown % below; PNG written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    eq = result.equity
    t_ms = eq.get_column("open_time").dt.epoch("ms").to_numpy()
    t, close_eq, low_eq, worst = _buckets(
        eq.get_column("equity").to_numpy(), eq.get_column("drawdown_pct").to_numpy(), t_ms
    )
    dates = t.astype("datetime64[ms]")
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot(dates, close_eq, color="#1f6feb", linewidth=1.1, label="equity")
    if low_eq is not close_eq:
        top.fill_between(dates, low_eq, close_eq, color="#1f6feb", alpha=0.15, linewidth=0)
    top.axhline(float(result.config.initial_capital), color="#888", linewidth=0.8, linestyle="--")
    m = result.metrics
    top.set_title(
        f"{result.strategy} — net {m['netPnl']:,.2f} ({m['totalPnlPct']:.2f} %), "
        f"{m['totalTrades']} trades, Sharpe {m['sharpeRatio']:.2f}",
        fontsize=10,
    )
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    bottom.fill_between(dates, -worst, 0, color="#d1242f", alpha=0.5, linewidth=0)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def render_html(result: BacktestResult, png: bytes, *, title: str | None = None) -> str:
    m = result.metrics
    seed = [(k, m.get(k)) for k in SEED_FIELDS]
    extra = [(k, v) for k, v in m.items() if k not in SEED_FIELDS]
    config = result.summary()
    trades = result.trades
    shown = trades.head(MAX_TRADE_ROWS)
    cols = [
        "trade_id",
        "side",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "quantity",
        "pnl",
        "exit_reason",
        "ambiguous",
    ]
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>"
        for r in shown.select(cols).iter_rows(named=True)
    )
    more = (
        f"<p>Showing the first {MAX_TRADE_ROWS} of {trades.height} trades; all are in trades.parquet.</p>"
        if trades.height > MAX_TRADE_ROWS
        else ""
    )
    span = " → ".join(datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") for ms in result.span)
    title = title or f"Backtest {result.strategy}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; }}
th {{ background: #f6f8fa; text-align: left; }}
.grid {{ display: flex; gap: 2rem; flex-wrap: wrap; }}
pre {{ background: #f6f8fa; padding: 1rem; font-size: 0.8rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(span)} UTC · {html.escape(str(m.get("resolution")))} · {m["candles"]:,} candles</p>
<img alt="equity and drawdown" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<div class="grid"><div><h2>Metrics</h2>{_table(seed)}</div><div><h2>More</h2>{_table(extra)}</div></div>
<h2>Trades</h2>{more}<table><tr>{head}</tr>{rows}</table>
<h2>Config</h2><pre>{html.escape(json.dumps({k: v for k, v in config.items() if k != "metrics"}, indent=2))}</pre>
<p>Sharpe: mean / stdev of per-candle equity returns × sqrt(candles per 365-day year).
Stops fill at the open when a candle opens beyond them; a candle touching both levels is
decided by the '{html.escape(result.config.intrabar)}' rule ({m["ambiguousCandles"]} such trades).</p>
</body></html>
"""


def write_report(result: BacktestResult, html_path: Path, png_path: Path | None = None) -> ReportPaths:
    """Write the PNG chart and the HTML report (which embeds the same PNG)."""
    html_path = Path(html_path)
    png_path = Path(png_path) if png_path else html_path.with_suffix(".png")
    render_chart(result, png_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(result, png_path.read_bytes()))
    return ReportPaths(html_path, png_path)
