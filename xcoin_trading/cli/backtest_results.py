"""`xcoin backtest show | compare | history`: stored results read back, never re-run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xcoin_trading.cli.backtest_common import fmt, ranking_lines
from xcoin_trading.config import get_settings

SHOWN = ("totalTrades", "winRate", "netPnl", "totalPnlPct", "sharpeRatio", "sortinoRatio", "calmarRatio",
         "cagrPct", "maxDrawdownPct", "profitFactor", "expectancy", "sqn", "totalCommission", "exposurePct")  # fmt: skip


@click.command("show")
@click.argument("result_id", type=int)
@click.option("--top", default=10, show_default=True, help="Ranking rows of a sweep.")
def show_cmd(result_id: int, top: int) -> None:
    """A stored backtest, sweep or walk-forward: inputs, metrics, ranking or windows, report."""
    import polars as pl

    from xcoin_trading.backtest.results import get_result

    r = get_result(result_id, settings=get_settings())
    c, m, a = r["config"], r["metrics"], r["artifacts"]
    click.echo(
        f"#{r['id']} {r['kind']} {r['strategy']}  {r['created_at']:%Y-%m-%d %H:%M} UTC  ({r['execution_time_ms']} ms)"
    )
    source = c.get("symbol") or Path(c.get("data_file") or "?").name
    click.echo(
        f"  data {source} {c.get('resolution') or ''} {c.get('start') or ''} {c.get('end') or ''}".rstrip()
    )
    click.echo(f"  params {json.dumps(c.get('params'), sort_keys=True, default=str)}")
    if c.get("grid"):
        click.echo(f"  grid {c['grid']}  metric {c.get('metric')}")
    for k in SHOWN:
        if k in m:
            click.echo(f"  {k:<22} {fmt(m[k])}")
    if r["kind"] == "sweep" and "ranking" in a:
        click.echo(f"ranking ({c.get('combinations')} combinations" +
                   (f", last {c['oos_fraction']:.0%} held out" if c.get("oos_fraction") else "") + "):")  # fmt: skip
        for line in ranking_lines(pl.read_parquet(a["ranking"]), c.get("metric", "sharpeRatio"), top):
            click.echo("  " + line)
    if r["kind"] == "walk_forward" and "windows" in a:
        for w in pl.read_parquet(a["windows"]).iter_rows(named=True):
            click.echo(f"  window {w['window']:>2}: test {w['test_start']:%Y-%m-%d} .. {w['test_end']:%Y-%m-%d}  "
                       f"in {fmt(w['in_sample'])}  out {fmt(w['out_of_sample'])}  {w['params']}")  # fmt: skip
    for w in c.get("warnings") or []:
        click.echo(f"warning: {w}")
    if a.get("report"):
        click.echo(f"report {a['report']}")


@click.command("compare")
@click.argument("first", type=int)
@click.argument("second", type=int)
def compare_cmd(first: int, second: int) -> None:
    """Two stored results side by side: what differs in their inputs, then their metrics."""
    from xcoin_trading.backtest.results import get_result

    a, b = (get_result(i, settings=get_settings()) for i in (first, second))
    click.echo(f"{'':<24} {'#' + str(a['id']):>16} {'#' + str(b['id']):>16}")
    click.echo(f"{'kind':<24} {a['kind']:>16} {b['kind']:>16}")
    click.echo(f"{'strategy':<24} {a['strategy'][:16]:>16} {b['strategy'][:16]:>16}")
    ca, cb = a["config"], b["config"]
    for key in ("symbol", "resolution", "start", "end", "data_file", "params", "grid", "config"):
        va, vb = ca.get(key), cb.get(key)
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                for sub in sorted(set(va) | set(vb)):
                    if va.get(sub) != vb.get(sub):
                        click.echo(
                            f"{key + '.' + sub:<24} {str(va.get(sub))[:16]:>16} {str(vb.get(sub))[:16]:>16}"
                        )
            else:
                click.echo(f"{key:<24} {str(va)[-16:]:>16} {str(vb)[-16:]:>16}")
    for k in SHOWN:
        va, vb = a["metrics"].get(k), b["metrics"].get(k)
        click.echo(f"{k:<24} {fmt(va):>16} {fmt(vb):>16}")


@click.command("history")
@click.option("--strategy", default=None, help="Only this strategy's backtests.")
@click.option("--limit", default=20, show_default=True)
def history_cmd(strategy: str | None, limit: int) -> None:
    """List stored backtests, newest first."""
    from xcoin_trading.backtest.results import list_results

    rows = list_results(strategy, limit=limit, settings=get_settings())
    if not rows:
        click.echo("no backtests stored" + (f" for {strategy}" if strategy else ""))
        return
    click.echo(
        f"{'id':>5}  {'when (UTC)':<16}  {'kind':<12} {'strategy':<20} {'source':<26} {'trades':>7} {'net P&L':>12} "
        f"{'return %':>9} {'Sharpe':>8} {'max DD %':>8}  report"
    )
    for r in rows:
        c, m = r["config"], r["metrics"]
        source = (
            f"{c.get('symbol')} {c.get('resolution')}"
            if c.get("symbol")
            else Path(c.get("data_file") or "?").name
        )
        num = {k: m.get(k) if isinstance(m.get(k), int | float) else float("nan")
               for k in ("totalTrades", "netPnl", "totalPnlPct", "sharpeRatio", "maxDrawdownPct")}  # fmt: skip
        click.echo(
            f"{r['id']:>5}  {r['created_at']:%Y-%m-%d %H:%M}  {c.get('kind', 'backtest'):<12} {r['strategy']:<20} "
            f"{source[:26]:<26} {num['totalTrades']:>7.0f} {num['netPnl']:>12,.2f} {num['totalPnlPct']:>9.2f} "
            f"{num['sharpeRatio']:>8.2f} {num['maxDrawdownPct']:>8.2f}  {r['artifacts'].get('report', '')}"
        )
