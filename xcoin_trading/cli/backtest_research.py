"""`xcoin backtest sweep | walk-forward | portfolio`: many runs of one strategy (a parameter grid,
rolling windows) or several strategies sharing one capital."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from xcoin_trading.cli.backtest_common import build_request, data_options, fmt, ranking_lines
from xcoin_trading.config import get_settings


def _progress_bar(total: int, label: str):
    """Progress on stderr: stdout carries the result (JSON or the table)."""
    return click.progressbar(
        length=total,
        label=label,
        # click 8.5 serves the deprecated get_text_stream through a module __getattr__ typed `object`
        file=click.get_text_stream("stderr"),  # pyright: ignore[reportCallIssue]
    )


def _grid_context(kw: dict, grid: str, metric: str) -> dict:
    return build_request(kw).context() | {"grid": grid, "metric": metric, "params": kw["params"]}


@click.command("sweep")
@data_options
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
    settings, config, resolved, params, candles, _ = prepare(build_request(kw))
    with _progress_bar(total, f"{total} backtests") as bar:
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
    for line in ranking_lines(ranking, metric, top):
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


@click.command("walk-forward")
@data_options
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
    settings, config, resolved, params, candles, _ = prepare(build_request(kw))
    with _progress_bar(total, f"{total} train backtests") as bar:
        wf = run_walk_forward(candles, resolved.strategy, parsed, config, base_params=params, metric=metric,
                              windows=windows, train_ratio=train_ratio, anchored=anchored, workers=workers,
                              progress=lambda done, _n: bar.update(1))  # fmt: skip
    click.echo(f"{'window':>6}  {'test from (UTC)':<16}  {'to':<16}  {'in sample':>10} {'out of sample':>13} "
               f"{'return %':>9} {'trades':>6}  params")  # fmt: skip
    for r in wf.windows.iter_rows(named=True):
        click.echo(f"{r['window']:>6}  {r['test_start']:%Y-%m-%d %H:%M}  {r['test_end']:%Y-%m-%d %H:%M}  "
                   f"{fmt(r['in_sample']):>10} {fmt(r['out_of_sample']):>13} {r['return_pct']:>9.2f} "
                   f"{r['trades']:>6}  {r['params']}")  # fmt: skip
    m = wf.oos.metrics
    click.echo(f"stitched out of sample: net P&L {m['netPnl']:,.2f} ({m['totalPnlPct']:.2f} %), {m['totalTrades']} "
               f"trades, Sharpe {fmt(m['sharpeRatio'])}, max drawdown {m['maxDrawdownPct']:.2f} %")  # fmt: skip
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


@click.command("portfolio")
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
               f"{m['totalTrades']} trades, Sharpe {fmt(m['sharpeRatio'])}, max drawdown {m['maxDrawdownPct']:.2f} %")  # fmt: skip
    for r in result.breakdown.iter_rows(named=True):
        click.echo(f"  {r['sleeve']:<28} trades {r['trades']:>6}  wins {r['wins']:>5}  net P&L {r['net_pnl']:>12,.2f}"
                   f"  fees {r['fees']:>10,.2f}  in market {r['exposure_pct']:>6.2f} %")  # fmt: skip
