"""`xcoin backtest run | sweep | walk-forward | portfolio | history | show | compare`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xcoin_trading.cli.backtest_common import build_request, data_options, fmt
from xcoin_trading.cli.backtest_research import portfolio_cmd, sweep_cmd, walk_forward_cmd
from xcoin_trading.cli.backtest_results import compare_cmd, history_cmd, show_cmd
from xcoin_trading.config import get_settings


@click.group("backtest")
def backtest_group() -> None:
    """Backtest strategies on historical candles (same code as live trading)."""


@backtest_group.command("run")
@data_options
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

    request = build_request(kw)
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
        click.echo(f"  {name:<22} {fmt(m[name])}  ({METRIC_UNITS[name]})")
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
    click.echo("  " + "  ".join(f"{k}={fmt(m[k])}" for k in extras))
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


for command in (sweep_cmd, walk_forward_cmd, portfolio_cmd, show_cmd, compare_cmd, history_cmd):
    backtest_group.add_command(command)


def register(main: click.Group) -> None:
    main.add_command(backtest_group)
