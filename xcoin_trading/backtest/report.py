"""Backtest reports: a PNG chart and a self-contained HTML tearsheet (`tearsheet.py` computes the
content; the Markdown for Dagster comes from `tearsheet.markdown`).

The chart: price with entry/exit markers, equity against buy & hold, drawdown. Long curves are
bucketed before plotting (1,000 buckets, more than the 880 px the PNG is wide: range, last value and
worst drawdown of each), so a 1M-candle chart still shows every extreme. It is drawn on a bare
`Figure` (no pyplot state) with fixed margins: a layout engine re-measured every text on each save
and was a third of the chart's time, which a Dagster backtest run pays before its success event.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xcoin_trading.backtest import tearsheet as ts
from xcoin_trading.backtest.engine import BacktestResult
from xcoin_trading.backtest.metrics import SEED_FIELDS

MAX_POINTS = 1000
MAX_TRADE_ROWS = 500
MAX_MARKERS = 2000


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    png: Path


def _bucket_edges(n: int) -> np.ndarray:
    return np.linspace(0, n, min(n, MAX_POINTS) + 1).astype(np.int64)


def _buckets(values: np.ndarray, edges: np.ndarray, how: str) -> np.ndarray:
    """One value per bucket: its last, lowest or highest (a 1M-candle curve in 2,000 points that
    still shows every extreme, as backtesting.py's and vectorbt's resampled plots do)."""
    if how == "last":
        return values[edges[1:] - 1]
    reduce = np.minimum if how == "min" else np.maximum
    return reduce.reduceat(values, edges[:-1])


def _markers(trades, edges: np.ndarray, *, entry: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candle index, price, is long) of entries or exits; past MAX_MARKERS, the first of each side
    per price bucket (more would only overprint at this resolution)."""
    col = "entry" if entry else "exit"
    idx = trades.get_column(f"{col}_index").to_numpy()
    price = trades.get_column(f"{col}_price").to_numpy()
    long = (trades.get_column("side") == "LONG").to_numpy()
    if idx.shape[0] > MAX_MARKERS:
        bucket = np.searchsorted(edges, idx, side="right") * 2 + long
        _, first = np.unique(bucket, return_index=True)
        idx, price, long = idx[first], price[first], long[first]
    return idx, price, long


def render_figure(result: BacktestResult, sheet: ts.Tearsheet):
    """Price with entries/exits, equity against buy & hold, drawdown: one matplotlib figure whose
    artists carry SVG ids (price, entries, exits, equity, benchmark, drawdown)."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    eq = result.equity
    n = eq.height
    t_ms = eq.get_column("open_time").dt.epoch("ms").to_numpy()
    edges = _bucket_edges(n)
    dates = _buckets(t_ms, edges, "last").astype("datetime64[ms]")
    equity = eq.get_column("equity").to_numpy()
    close = eq.get_column("close").to_numpy()
    fig = Figure(figsize=(11, 8))
    price_ax, top, bottom = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 1]})
    fig.subplots_adjust(left=0.08, right=0.985, top=0.96, bottom=0.05, hspace=0.12)
    if n > MAX_POINTS:  # the band of each bucket's range, then its last close
        band = price_ax.fill_between(dates, _buckets(close, edges, "min"), _buckets(close, edges, "max"),
                                     color="#57606a", alpha=0.25, linewidth=0)  # fmt: skip
        band.set_gid("price-range")
    (line,) = price_ax.plot(
        dates, _buckets(close, edges, "last"), color="#57606a", linewidth=0.8, label="close"
    )
    line.set_gid("price")
    trades = result.trades
    for entry in (True, False):
        idx, price, long = _markers(trades, edges, entry=entry)
        when = t_ms[idx].astype("datetime64[ms]")
        if entry:
            marks = price_ax.scatter(when[long], price[long], marker="^", color="#1a7f37", s=28, zorder=3,
                                     label="long entry")  # fmt: skip
            shorts = price_ax.scatter(when[~long], price[~long], marker="v", color="#cf222e", s=28, zorder=3,
                                      label="short entry")  # fmt: skip
            marks.set_gid("entries-long")
            shorts.set_gid("entries-short")
        else:
            marks = price_ax.scatter(when, price, marker="x", color="#0b0b0b", s=18, linewidths=0.8, zorder=4,
                                     label="exit")  # fmt: skip
            marks.set_gid("exits")
    price_ax.set_ylabel("price")
    price_ax.legend(loc="upper left", fontsize=8, ncols=4)
    price_ax.grid(alpha=0.3)
    m = result.metrics
    price_ax.set_title(
        f"{result.strategy} — net {m['netPnl']:,.2f} ({m['totalPnlPct']:.2f} %) vs buy & hold "
        f"{sheet.benchmark['totalReturnPct']:.2f} %, {m['totalTrades']} trades, Sharpe {m['sharpeRatio']:.2f}",
        fontsize=10,
    )
    (eq_line,) = top.plot(
        dates, _buckets(equity, edges, "last"), color="#1f6feb", linewidth=1.1, label="strategy"
    )
    eq_line.set_gid("equity")
    if n > MAX_POINTS:
        low = top.fill_between(dates, _buckets(equity, edges, "min"), _buckets(equity, edges, "last"),
                               color="#1f6feb", alpha=0.15, linewidth=0)  # fmt: skip
        low.set_gid("equity-low")
    (bench,) = top.plot(dates, _buckets(sheet.benchmark_curve, edges, "last"), color="#bf8700", linewidth=1.0,
                        label="buy & hold")  # fmt: skip
    bench.set_gid("benchmark")
    top.axhline(float(result.config.initial_capital), color="#888", linewidth=0.8, linestyle="--")
    both = np.concatenate((equity, sheet.benchmark_curve))
    if both.min() > 0 and both.max() / both.min() > 10:  # one curve would flatten the other
        top.set_yscale("log")
    top.set_ylabel("equity")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    worst = _buckets(eq.get_column("drawdown_pct").to_numpy(), edges, "max")
    dd = bottom.fill_between(dates, -worst, 0, color="#d1242f", alpha=0.5, linewidth=0)
    dd.set_gid("drawdown")
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    return fig


def render_chart(
    result: BacktestResult, path: Path, *, dpi: int = 80, sheet: ts.Tearsheet | None = None
) -> tuple[Path, str]:
    """The figure as a PNG at `path`; returns (path, the same figure as SVG text for the HTML)."""
    fig = render_figure(result, sheet or ts.build(result))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return path, svg[svg.index("<svg") :]


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


def _heat(value: float | None, scale: float) -> str:
    """Green for gains, red for losses, stronger the larger (a quantstats-style heat map cell)."""
    if value is None:
        return ""
    alpha = min(abs(value) / scale, 1.0) * 0.75 + 0.05 if scale > 0 else 0.05
    rgb = "26,127,55" if value >= 0 else "207,34,46"
    return f" style='background: rgba({rgb},{alpha:.2f})'"


def _monthly_html(sheet: ts.Tearsheet) -> str:
    cells = [abs(c) for _, row, _ in sheet.months for c in row if c is not None]
    scale = max(cells, default=0.0)
    head = "<tr><th>Year</th>" + "".join(f"<th>{m}</th>" for m in ts.MONTHS) + "<th>Year</th></tr>"
    rows = "".join(
        f"<tr><th>{year}</th>"
        + "".join(f"<td{_heat(c, scale)}>{'' if c is None else f'{c:.1f}'}</td>" for c in row)
        + f"<td{_heat(total, scale)}><b>{total:.1f}</b></td></tr>"
        for year, row, total in sheet.months
    )
    return f"<table id='monthly-returns' class='heat'>{head}{rows}</table>"


def _drawdowns_html(sheet: ts.Tearsheet) -> str:
    head = "<tr><th>#</th><th>Peak</th><th>Trough</th><th>Recovered</th><th>Depth %</th><th>Length</th>" \
           "<th>Recovery</th></tr>"  # fmt: skip
    rows = "".join(
        f"<tr><td>{i}</td><td>{ts.utc_text(d['start_ms'])}</td><td>{ts.utc_text(d['trough_ms'])}</td>"
        f"<td>{ts.utc_text(d['recovery_ms']) if d['recovery_ms'] is not None else 'not yet'}</td>"
        f"<td>{d['depth_pct']:.2f}</td><td>{ts.human_duration(d['duration_s'])}</td>"
        f"<td>{ts.human_duration(d['recovery_s'])}</td></tr>"
        for i, d in enumerate(sheet.drawdowns, start=1)
    )
    return f"<table id='drawdowns'>{head}{rows}</table>"


def _compare_html(sheet: ts.Tearsheet) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(ts.compared_value(k, sheet.strategy.get(k)))}</td>"
        f"<td>{html.escape(ts.compared_value(k, sheet.benchmark.get(k)))}</td></tr>"
        for k, label in ts.COMPARED
    )
    return (
        f"<table id='vs-benchmark'><tr><th></th><th>Strategy</th><th>Buy &amp; hold</th></tr>{rows}</table>"
    )


def _trades_html(result: BacktestResult) -> str:
    rows = ts.trade_rows(result.trades, MAX_TRADE_ROWS)
    if not rows:
        return "<p>No trades.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    more = (
        f"<p>Showing the first {MAX_TRADE_ROWS} of {result.trades.height} trades; all are in trades.parquet.</p>"
        if result.trades.height > MAX_TRADE_ROWS
        else ""
    )
    return f"{more}<table id='trades'><tr>{head}</tr>{body}</table>"


def render_html(
    result: BacktestResult, svg: str, *, sheet: ts.Tearsheet | None = None, title: str | None = None
) -> str:
    """A self-contained page: inputs, the chart (inline SVG), strategy vs buy & hold, monthly returns,
    worst drawdowns, trades, every metric."""
    sheet = sheet or ts.build(result)
    m = result.metrics
    seed = [(k, m.get(k)) for k in SEED_FIELDS]
    extra = [(k, v) for k, v in m.items() if k not in SEED_FIELDS]
    config = result.summary()
    title = title or f"Backtest {result.strategy}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; }}
th {{ background: #f6f8fa; text-align: left; }}
table.heat td {{ min-width: 3rem; }}
.grid {{ display: flex; gap: 2rem; flex-wrap: wrap; }}
.chart svg {{ max-width: 100%; height: auto; }}
pre {{ background: #f6f8fa; padding: 1rem; font-size: 0.8rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table id='inputs' class='kv'>{
        "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in sheet.inputs)
    }</table>
<div class="chart" id="chart">{svg}</div>
<div class="grid"><div><h2>Strategy vs buy &amp; hold</h2>{_compare_html(sheet)}</div>
<div><h2>Worst drawdowns</h2>{_drawdowns_html(sheet)}</div></div>
<h2>Monthly returns %</h2>{_monthly_html(sheet)}
<h2>Trades</h2>{_trades_html(result)}
<div class="grid"><div><h2>Metrics</h2>{_table(seed)}</div><div><h2>More</h2>{_table(extra)}</div></div>
<h2>Config</h2><pre>{
        html.escape(json.dumps({k: v for k, v in config.items() if k != "metrics"}, indent=2))
    }</pre>
<p>Sharpe: mean / stdev of per-candle equity returns × sqrt(candles per 365-day year), for both columns.
Buy &amp; hold buys all-in at the first close and sells at the last, paying the same commission.
A candle touching both levels is decided by the '{html.escape(result.config.intrabar)}' rule
({m["ambiguousCandles"]} such trades). The chart shows {min(result.equity.height, MAX_POINTS):,} buckets
(each bucket's range, last close and worst drawdown); past {
        MAX_MARKERS:,} trades, one marker per side and bucket.</p>
</body></html>
"""


def write_report(result: BacktestResult, html_path: Path, png_path: Path | None = None) -> ReportPaths:
    """Write the PNG chart and the HTML report (the same figure, inline as SVG)."""
    html_path = Path(html_path)
    png_path = Path(png_path) if png_path else html_path.with_suffix(".png")
    sheet = ts.build(result)
    _, svg = render_chart(result, png_path, sheet=sheet)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(result, svg, sheet=sheet))
    return ReportPaths(html_path, png_path)
