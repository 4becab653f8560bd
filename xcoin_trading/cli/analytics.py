"""`xcoin sql`, `xcoin pnl` and `xcoin analytics build|models`: the DuckDB warehouse from the shell."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from xcoin_trading.analytics.queries import jsonable as _plain
from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError

TABLE_MAX_ROWS = 200


def _print_table(result: Any, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for name, kind in zip(result.columns, result.types, strict=True):
        table.add_column(
            name,
            justify="right"
            if kind.startswith(("DECIMAL", "BIGINT", "INTEGER", "DOUBLE", "HUGEINT"))
            else "left",
        )
    records = result.table.slice(0, max_rows).to_pylist()
    for row in records:
        table.add_row(*("" if v is None else str(_plain(v)) for v in row.values()))
    console = Console(width=max(120, Console().width))
    console.print(table)
    more = f" (showing {max_rows})" if result.rows > max_rows else ""
    click.echo(f"{result.rows} rows{more} in {result.seconds:.3f} s", err=True)


@click.command("sql")
@click.argument("query", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the SQL from FILE.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file (required for parquet)."
)
@click.option(
    "--write", is_flag=True, help="Allow statements that change the warehouse (it is rebuilt from snapshots)."
)
@click.option("--max-rows", default=TABLE_MAX_ROWS, show_default=True, help="Rows printed by --format table.")
def sql_cmd(
    query: str | None, file: Path | None, fmt: str, out: Path | None, write: bool, max_rows: int
) -> None:
    """Run SQL on the DuckDB analytics warehouse (models and snapshot tables).

    Read-only unless --write. Example: xcoin sql "SELECT * FROM strategy_performance ORDER BY realized_pnl DESC"
    """
    from xcoin_trading.analytics.queries import run_query

    if (query is None) == (file is None):
        raise ValidationError("query", "give exactly one of a QUERY argument or --file")
    if fmt == "parquet" and out is None:
        raise ValidationError("out", "is required with --format parquet")
    if file is not None:
        text = file.read_text()
    elif query is not None:
        text = query
    else:  # refused above; said again so the checker sees `text` is set
        raise ValidationError("query", "give exactly one of a QUERY argument or --file")
    result = run_query(get_settings(), text, allow_write=write)
    if fmt == "table":
        _print_table(result, max_rows)
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result.table, out)
        click.echo(f"wrote {result.rows} rows to {out}", err=True)
        return
    if fmt == "csv":
        import pyarrow.csv as pcsv

        target = out or sys.stdout.buffer
        pcsv.write_csv(result.table, target)
        return
    text = json.dumps([_plain(r) for r in result.records()], indent=1)
    if out:
        out.write_text(text + "\n")
    else:
        click.echo(text)


@click.command("pnl")
@click.option("--user", "email", required=True, help="The user's email.")
@click.option("--period", type=click.Choice(["1d", "7d", "30d", "all"]), default="7d", show_default=True)
@click.option(
    "--price",
    "prices",
    multiple=True,
    metavar="SYMBOL=PRICE",
    help="Current price for unrealised P&L (repeatable).",
)
def pnl_cmd(email: str, period: str, prices: tuple[str, ...]) -> None:
    """Print the P&L summary (the API's /api/positions/pnl) from the analytics models, as JSON."""
    from xcoin_trading.analytics.pnl import pnl_summary, user_id_for_email

    quotes: dict[str, Decimal] = {}
    for item in prices:
        symbol, _, price = item.partition("=")
        try:
            quotes[symbol.strip()] = Decimal(price)
        except ArithmeticError:
            raise ValidationError("price", f"must look like SYMBOL=PRICE, got {item!r}") from None
        if not symbol.strip() or not quotes[symbol.strip()].is_finite() or quotes[symbol.strip()] <= 0:
            raise ValidationError("price", f"must look like SYMBOL=PRICE with a positive price, got {item!r}")
    settings = get_settings()
    summary = pnl_summary(settings, user_id_for_email(settings, email), period, prices=quotes)
    click.echo(json.dumps(_plain(summary), indent=1))


@click.group("analytics")
def analytics_group() -> None:
    """Snapshots of the store -> dbt_like_sql models in DuckDB -> data tests."""


@analytics_group.command("build")
@click.option("--full", is_flag=True, help="Copy every row again (after hard deletes), not only changes.")
def build_cmd(full: bool) -> None:
    """Snapshot every table, build every model, run every data test. Exit 1 if a data test fails."""
    from xcoin_trading.analytics import build_all

    summary = build_all(get_settings(), full=full)
    click.echo(summary.describe())
    if summary.failed_tests:
        for test in summary.failed_tests:
            click.echo(
                f"FAILED {test.name} ({test.failing_rows} rows), e.g. {_plain(test.sample[:3])}", err=True
            )
        sys.exit(1)


@analytics_group.command("models")
def models_cmd() -> None:
    """List models (build order) and data tests with the tables they read."""
    from xcoin_trading.analytics.models import load_project

    project = load_project()
    for name in project.order:
        model = project.models[name]
        state = f"  PARSE ERROR: {model.parse_error}" if model.parse_error else ""
        click.echo(f"model {name:<28} <- {', '.join(sorted(model.refs))}{state}")
    for name in project.tests:
        click.echo(f"test  {name:<44} on {project.test_target(name)}")


def register(main: click.Group) -> None:
    main.add_command(sql_cmd)
    main.add_command(pnl_cmd)
    main.add_command(analytics_group)
