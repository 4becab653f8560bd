"""`xcoin backtest run | sweep | walk-forward | portfolio | history | show | compare`."""

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
        click.option(
            "--slippage",
            default="0",
            show_default=True,
            help="Market fills (entries, exits, stop losses) move this fraction against you, as the "
            "simulator's --slippage (0.0005 = 5 bps).",
        ),
        click.option(
            "--slippage-range",
            default="0",
            show_default=True,
            help="Plus this fraction of the fill candle's high - low.",
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
        slippage=kw["slippage"],
        slippage_range=kw["slippage_range"],
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


def _ranking_lines(ranking, metric: str, top: int) -> list[str]:
    cols = ["rank", *[c for c in ranking.columns if c.startswith("param_")], metric, "totalTrades", "netPnl",
            "maxDrawdownPct", *[c for c in ranking.columns if c.startswith("oos_")], "error"]  # fmt: skip
    cols = [c for c in dict.fromkeys(cols) if c in ranking.columns]
    return [
        "  ".join(f"{k.removeprefix('param_')}={_fmt(v)}" for k, v in row.items() if v is not None)
        for row in ranking.head(top).select(cols).iter_rows(named=True)
    ]


def _grid_context(kw: dict, grid: str, metric: str) -> dict:
    return _request(kw).context() | {"grid": grid, "metric": metric, "params": kw["params"]}


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
@click.option(
    "--oos",
    "oos_fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Hold out this last fraction of the candles: rank in sample, score each set out of sample too.",
)
@click.option("--no-save", is_flag=True, help="Do not store the sweep in the history.")
def sweep_cmd(
    grid: str, metric: str, top: int, out_file: str | None, workers: int | None, oos_fraction: float,
    no_save: bool, **kw,
) -> None:  # fmt: skip
    """Backtest every combination of a parameter grid and rank them."""
    import time

    import polars as pl

    from xcoin_trading.backtest.results import save_research
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import combinations, edge_warnings, parse_grid, run_sweep

    began = time.perf_counter()
    parsed = parse_grid(grid)
    total = len(combinations(parsed))
    settings, config, resolved, params, candles, _ = prepare(_request(kw))
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
            oos_fraction=oos_fraction,
        )
    for line in _ranking_lines(ranking, metric, top):
        click.echo(line)
    best = ranking.row(0, named=True)
    warnings = edge_warnings(
        parsed, {k.removeprefix("param_"): v for k, v in best.items() if k.startswith("param_")}
    )
    for w in warnings:
        click.echo(f"warning: {w}")
    if out_file:
        ranking.write_parquet(out_file)
        click.echo(f"ranking written to {out_file}")
    errors = ranking.filter(pl.col("error").is_not_null())["error"]
    if errors.len():  # a combination fails only on its parameters (e.g. fast >= slow): bad input
        click.echo(f"{errors.len()} of {total} combinations are invalid; first: {errors[0]}", err=True)
    if errors.len() == total:
        sys.exit(2)
    if not no_save:
        saved = save_research(
            "sweep", resolved.strategy.code, strategy_id=resolved.strategy_id,
            config=_grid_context(kw, grid, metric) | {"oos_fraction": oos_fraction, "combinations": total,
                                                     "warnings": warnings, "simulation": config.to_json()},
            metrics={k: v for k, v in best.items() if k != "rank"}, frames={"ranking": ranking},
            execution_time_ms=(time.perf_counter() - began) * 1000, settings=settings,
        )  # fmt: skip
        click.echo(f"stored as sweep #{saved.id}: xcoin backtest show {saved.id}")


@backtest_group.command("walk-forward")
@_data_options
@click.option("--grid", required=True, help="Parameter grid, as for sweep.")
@click.option(
    "--metric", default="sharpeRatio", show_default=True, help="Metric that chooses each window's set."
)
@click.option("--windows", default=10, show_default=True, help="Test windows (tiling the end of the data).")
@click.option(
    "--train-ratio", default=3.0, show_default=True, help="Train window length / test window length."
)
@click.option("--anchored", is_flag=True, help="Train windows all start at the first candle (else rolling).")
@click.option("--workers", type=int, default=None, help="Parallel threads (default: all cores).")
@click.option(
    "--report", "report_out", type=click.Path(dir_okay=False), help="Write the out-of-sample report here."
)
@click.option("--no-save", is_flag=True, help="Do not store the walk-forward in the history.")
def walk_forward_cmd(
    grid: str, metric: str, windows: int, train_ratio: float, anchored: bool, workers: int | None,
    report_out: str | None, no_save: bool, **kw,
) -> None:  # fmt: skip
    """Choose parameters on each train window, trade them on the next test window, stitch the test windows."""
    import time

    from xcoin_trading.backtest.results import save_research
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import combinations, parse_grid
    from xcoin_trading.backtest.walkforward import run_walk_forward

    began = time.perf_counter()
    parsed = parse_grid(grid)
    total = len(combinations(parsed)) * windows
    settings, config, resolved, params, candles, _ = prepare(_request(kw))
    with click.progressbar(
        length=total, label=f"{total} train backtests", file=click.get_text_stream("stderr")
    ) as bar:
        wf = run_walk_forward(candles, resolved.strategy, parsed, config, base_params=params, metric=metric,
                              windows=windows, train_ratio=train_ratio, anchored=anchored, workers=workers,
                              progress=lambda done, _n: bar.update(1))  # fmt: skip
    click.echo(f"{'window':>6}  {'test from (UTC)':<16}  {'to':<16}  {'in sample':>10} {'out of sample':>13} "
               f"{'return %':>9} {'trades':>6}  params")  # fmt: skip
    for r in wf.windows.iter_rows(named=True):
        click.echo(f"{r['window']:>6}  {r['test_start']:%Y-%m-%d %H:%M}  {r['test_end']:%Y-%m-%d %H:%M}  "
                   f"{_fmt(r['in_sample']):>10} {_fmt(r['out_of_sample']):>13} {r['return_pct']:>9.2f} "
                   f"{r['trades']:>6}  {r['params']}")  # fmt: skip
    m = wf.oos.metrics
    click.echo(f"stitched out of sample: net P&L {m['netPnl']:,.2f} ({m['totalPnlPct']:.2f} %), {m['totalTrades']} "
               f"trades, Sharpe {_fmt(m['sharpeRatio'])}, max drawdown {m['maxDrawdownPct']:.2f} %")  # fmt: skip
    for w in wf.warnings:
        click.echo(f"warning: {w}")
    if report_out:
        from xcoin_trading.backtest.report import write_report

        write_report(wf.oos, Path(report_out))
        click.echo(f"report written to {report_out}")
    if not no_save:
        frames = {"windows": wf.windows.with_columns()} | {
            f"ranking_{c.window.key}": c.ranking for c in wf.choices
        }
        saved = save_research(
            "walk_forward", resolved.strategy.code, strategy_id=resolved.strategy_id,
            config=_grid_context(kw, grid, metric) | {"windows": windows, "train_ratio": train_ratio,
                                                     "anchored": anchored, "warnings": wf.warnings,
                                                     "simulation": config.to_json()},
            metrics=m, frames=frames, result=wf.oos,
            execution_time_ms=(time.perf_counter() - began) * 1000, settings=settings,
        )  # fmt: skip
        click.echo(f"stored as walk-forward #{saved.id}: xcoin backtest show {saved.id}")


@backtest_group.command("portfolio")
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    required=True,
    help="Strategy (repeat for several strategies side by side on one market).",
)
@click.option(
    "--data",
    "data_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Candle file per market (repeat for several markets).",
)
@click.option("--params", default="", help="Strategy parameters: k=v,k2=v2 (every sleeve).")
@click.option("--capital", default="10000", show_default=True)
@click.option("--risk", default="0.02", show_default=True)
@click.option("--leverage", default="1", show_default=True)
@click.option("--commission", default="0.001", show_default=True)
@click.option("--slippage", default="0", show_default=True)
@click.option("--gap-fill", type=click.Choice(["open", "level"]), default="open", show_default=True)
def portfolio_cmd(strategies, data_files, params, capital, risk, leverage, commission, slippage, gap_fill) -> None:  # fmt: skip
    """One shared capital: a strategy over several markets, or several strategies on one market."""
    from xcoin_trading.backtest.engine import SimulationConfig
    from xcoin_trading.backtest.portfolio import Sleeve, run_portfolio
    from xcoin_trading.backtest.results import resolve_strategy
    from xcoin_trading.backtest.service import parse_params
    from xcoin_trading.errors import ValidationError
    from xcoin_trading.strategy import read_candles_file

    if len(strategies) > 1 and len(data_files) > 1:
        raise ValidationError("strategy", "give several strategies on one --data, or one strategy on several")
    config = SimulationConfig(initial_capital=capital, risk_per_trade=risk, leverage=leverage,
                              commission=commission, slippage=slippage, gap_fill=gap_fill)  # fmt: skip
    given = parse_params(params)
    sleeves = []
    for ref in strategies:
        resolved = resolve_strategy(ref, get_settings())
        for f in data_files:
            label = Path(f).stem if len(strategies) == 1 else ref
            sleeves.append(
                Sleeve(label, read_candles_file(f), resolved.strategy, {**resolved.params, **given})
            )
    result = run_portfolio(sleeves, config)
    m = result.metrics
    click.echo(f"portfolio of {len(sleeves)}: net P&L {m['netPnl']:,.2f} ({m['totalPnlPct']:.2f} %), "
               f"{m['totalTrades']} trades, Sharpe {_fmt(m['sharpeRatio'])}, max drawdown {m['maxDrawdownPct']:.2f} %")  # fmt: skip
    for r in result.breakdown.iter_rows(named=True):
        click.echo(f"  {r['sleeve']:<28} trades {r['trades']:>6}  wins {r['wins']:>5}  net P&L {r['net_pnl']:>12,.2f}"
                   f"  fees {r['fees']:>10,.2f}  in market {r['exposure_pct']:>6.2f} %")  # fmt: skip


SHOWN = ("totalTrades", "winRate", "netPnl", "totalPnlPct", "sharpeRatio", "sortinoRatio", "calmarRatio",
         "cagrPct", "maxDrawdownPct", "profitFactor", "expectancy", "sqn", "totalCommission", "exposurePct")  # fmt: skip


@backtest_group.command("show")
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
            click.echo(f"  {k:<22} {_fmt(m[k])}")
    if r["kind"] == "sweep" and "ranking" in a:
        click.echo(f"ranking ({c.get('combinations')} combinations" +
                   (f", last {c['oos_fraction']:.0%} held out" if c.get("oos_fraction") else "") + "):")  # fmt: skip
        for line in _ranking_lines(pl.read_parquet(a["ranking"]), c.get("metric", "sharpeRatio"), top):
            click.echo("  " + line)
    if r["kind"] == "walk_forward" and "windows" in a:
        for w in pl.read_parquet(a["windows"]).iter_rows(named=True):
            click.echo(f"  window {w['window']:>2}: test {w['test_start']:%Y-%m-%d} .. {w['test_end']:%Y-%m-%d}  "
                       f"in {_fmt(w['in_sample'])}  out {_fmt(w['out_of_sample'])}  {w['params']}")  # fmt: skip
    for w in c.get("warnings") or []:
        click.echo(f"warning: {w}")
    if a.get("report"):
        click.echo(f"report {a['report']}")


@backtest_group.command("compare")
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
        click.echo(f"{k:<24} {_fmt(va):>16} {_fmt(vb):>16}")


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


def register(main: click.Group) -> None:
    main.add_command(backtest_group)
