"""`xcoin backtest run | sweep | history`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from xcoin_trading.config import get_settings


def _data_options(fn):
    options = [
        click.option(
            "--strategy", required=True, help="Built-in name, a .py file, or a stored strategy's code."
        ),
        click.option(
            "--data", "data_file", type=click.Path(dir_okay=False), help="Candle file (Parquet or CSV)."
        ),
        click.option("--symbol", help="Market, e.g. BTCUSDT (candles from the lake)."),
        click.option("--resolution", help="Candle resolution, e.g. 1m, 1h."),
        click.option("--start", help="YYYY-MM-DD or ISO datetime (UTC)."),
        click.option("--end", help="YYYY-MM-DD (that whole day included) or ISO datetime (exclusive)."),
        click.option("--params", default="", help="Strategy parameters: k=v,k2=v2."),
        click.option(
            "--capital", default="10000", show_default=True, help="Initial capital (quote currency)."
        ),
        click.option(
            "--risk", default="0.02", show_default=True, help="Risk per trade, a fraction of equity."
        ),
        click.option("--leverage", default="1", show_default=True),
        click.option(
            "--commission", default="0.001", show_default=True, help="Fee per side, a fraction of notional."
        ),
        click.option(
            "--intrabar",
            type=click.Choice(["sl_first", "tp_first", "1m"]),
            default="sl_first",
            show_default=True,
            help="Who wins when one candle touches both SL and TP.",
        ),
        click.option(
            "--intrabar-data",
            "intrabar_file",
            type=click.Path(dir_okay=False),
            help="1m candle file for --intrabar 1m with --data.",
        ),
        click.option(
            "--gap-fill",
            type=click.Choice(["open", "level"]),
            default="open",
            show_default=True,
            help="A candle opening beyond SL/TP fills at its open, or at the level (SMA-SLTP spec).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _request(kw: dict):
    from xcoin_trading.backtest.service import BacktestRequest, parse_params

    return BacktestRequest(
        strategy=kw["strategy"],
        symbol=kw["symbol"],
        resolution=kw["resolution"],
        start=kw["start"],
        end=kw["end"],
        data_file=kw["data_file"],
        intrabar_file=kw["intrabar_file"],
        params=parse_params(kw["params"]),
        initial_capital=kw["capital"],
        risk_per_trade=kw["risk"],
        leverage=kw["leverage"],
        commission=kw["commission"],
        intrabar=kw["intrabar"],
        gap_fill=kw["gap_fill"],
    )


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


@click.group("backtest")
def backtest_group() -> None:
    """Backtest strategies on historical candles (same code as live trading)."""


@backtest_group.command("run")
@_data_options
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write {metrics, trades, config} here."
)
@click.option(
    "--report", "report_out", type=click.Path(dir_okay=False), help="Also write the HTML report here."
)
@click.option("--no-save", is_flag=True, help="Do not store the result (no history row, no artifacts).")
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Run a strategy that fails validation (e.g. looks ahead); its figures are then not trustworthy.",
)
def run_cmd(json_out: str | None, report_out: str | None, no_save: bool, allow_invalid: bool, **kw) -> None:
    """Run one backtest and print its metrics.

    A .py file is validated first like an upload (sandboxed; compiles, runs, does not look ahead), a
    stored strategy must be VALID: otherwise the run is refused (exit 2) unless --allow-invalid."""
    from xcoin_trading.backtest.metrics import METRIC_UNITS, SEED_FIELDS
    from xcoin_trading.backtest.service import execute, validation_problems
    from xcoin_trading.errors import ValidationError

    request = _request(kw)
    problems = validation_problems(request, get_settings())
    if problems and not allow_invalid:
        raise ValidationError(
            "strategy",
            f"{problems[0]} ({kw['strategy']} fails validation; pass --allow-invalid to run it anyway)",
        )
    for problem in problems:
        click.echo(
            f"warning: {kw['strategy']} fails validation, its results are not trustworthy: {problem}",
            err=True,
        )
    result, saved = execute(request, settings=get_settings(), save=not no_save, report_path=report_out)
    m = result.metrics
    click.echo(
        f"{result.strategy} {json.dumps(result.params, sort_keys=True)}  {m['candles']:,} candles ({m['resolution']})"
    )
    for name in SEED_FIELDS:
        click.echo(f"  {name:<22} {_fmt(m[name])}  ({METRIC_UNITS[name]})")
    extras = (
        "grossPnl",
        "netPnlPct",
        "sortinoRatio",
        "calmarRatio",
        "cagrPct",
        "expectancy",
        "sqn",
        "exposurePct",
        "ambiguousCandles",
        "refusedEntries",
    )
    click.echo("  " + "  ".join(f"{k}={_fmt(m[k])}" for k in extras))
    if m["spanDays"] < 365:
        click.echo(
            f"  (cagrPct extrapolates {m['spanDays']:.1f} days to a year; netPnlPct is this span's return)"
        )
    t = result.timings_ms
    click.echo(
        f"  time: signals {t['signals']:.0f} ms, simulation {t['simulate']:.0f} ms, total {t['total']:.0f} ms"
    )
    if saved is not None:
        click.echo(f"stored as backtest #{saved.id}; report {saved.artifacts.get('report')}")
    if report_out:
        click.echo(f"report written to {report_out}")
    if json_out:
        payload = result.summary() | {"units": METRIC_UNITS, "trades": json.loads(result.trades.write_json())}
        Path(json_out).write_text(json.dumps(payload, indent=1, allow_nan=False, default=str))
        click.echo(f"json written to {json_out}")


@backtest_group.command("sweep")
@_data_options
@click.option(
    "--grid", required=True, help="Parameter grid: fast=10,20,30;slow=50:200:50 (values or start:stop:step)."
)
@click.option("--metric", default="sharpeRatio", show_default=True, help="Ranking metric.")
@click.option("--top", default=10, show_default=True, help="Rows to print.")
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="Write the whole ranking as Parquet."
)
@click.option("--workers", type=int, default=None, help="Parallel threads (default: all cores).")
def sweep_cmd(grid: str, metric: str, top: int, out_file: str | None, workers: int | None, **kw) -> None:
    """Backtest every combination of a parameter grid and rank them."""
    import polars as pl

    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import combinations, parse_grid, run_sweep

    parsed = parse_grid(grid)
    total = len(combinations(parsed))
    _, config, resolved, params, candles, _ = prepare(_request(kw))
    with click.progressbar(
        length=total, label=f"{total} backtests", file=click.get_text_stream("stderr")
    ) as bar:
        ranking = run_sweep(
            candles,
            resolved.strategy,
            parsed,
            config,
            base_params=params,
            metric=metric,
            workers=workers,
            progress=lambda done, _n: bar.update(1),
        )
    cols = [
        "rank",
        *[c for c in ranking.columns if c.startswith("param_")],
        metric,
        "totalTrades",
        "netPnl",
        "maxDrawdownPct",
        "error",
    ]
    cols = list(dict.fromkeys(cols))
    for row in ranking.head(top).select(cols).iter_rows(named=True):
        click.echo(
            "  ".join(f"{k.removeprefix('param_')}={_fmt(v)}" for k, v in row.items() if v is not None)
        )
    if out_file:
        ranking.write_parquet(out_file)
        click.echo(f"ranking written to {out_file}")
    errors = ranking.filter(pl.col("error").is_not_null())["error"]
    if errors.len():  # a combination fails only on its parameters (e.g. fast >= slow): bad input
        click.echo(f"{errors.len()} of {total} combinations are invalid; first: {errors[0]}", err=True)
    if errors.len() == total:
        sys.exit(2)


@backtest_group.command("history")
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
        f"{'id':>5}  {'when (UTC)':<16}  {'strategy':<20} {'source':<26} {'trades':>7} {'net P&L':>12} "
        f"{'return %':>9} {'Sharpe':>8} {'max DD %':>8}  report"
    )
    for r in rows:
        c, m = r["config"], r["metrics"]
        source = (
            f"{c.get('symbol')} {c.get('resolution')}"
            if c.get("symbol")
            else Path(c.get("data_file") or "?").name
        )
        click.echo(
            f"{r['id']:>5}  {r['created_at']:%Y-%m-%d %H:%M}  {r['strategy']:<20} {source[:26]:<26} "
            f"{m['totalTrades']:>7} {m['netPnl']:>12,.2f} {m['totalPnlPct']:>9.2f} {m['sharpeRatio']:>8.2f} "
            f"{m['maxDrawdownPct']:>8.2f}  {r['artifacts'].get('report', '')}"
        )


def register(main: click.Group) -> None:
    main.add_command(backtest_group)
