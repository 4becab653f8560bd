"""`xcoin data`: import candle files, backfill from the exchange, and look at the lake."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.timeframes import TRADED_RESOLUTIONS


def _day(field: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError(field, f"must be a UTC day YYYY-MM-DD, got {value!r}") from None


@contextmanager
def _progress(description: str, total: int | None = None) -> Iterator:
    """A rich progress bar on stderr (stdout stays for the summary line and reports)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)

        def advance(done: int, total: int, label: str = "") -> None:
            progress.update(task, completed=done, total=total, description=f"{description} {label}".strip())

        yield advance


@click.group("data")
def data_group() -> None:
    """Candles: the Parquet lake, its DuckDB catalog, imports and backfills."""


@data_group.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--symbol", required=True, help="Market, e.g. BTCUSDT (spot) or B-BTC_USDT (futures).")
@click.option(
    "--resolution", required=True, type=click.Choice(TRADED_RESOLUTIONS), help="Candle resolution of FILE."
)
@click.option(
    "--start", default=None, help="First UTC day to import (YYYY-MM-DD); default: the file's first."
)
@click.option("--end", default=None, help="Last UTC day to import, inclusive; default: the file's last.")
def import_cmd(file: Path, symbol: str, resolution: str, start: str | None, end: str | None) -> None:
    """Load a Parquet or CSV candle file into the lake, one checked day at a time.

    FILE needs the columns open_time (epoch ms or ISO time, UTC), open, high, low, close, volume.
    A day with bad rows is reported and not written; the exit status is then 1.
    """
    from xcoin_trading.marketdata.importer import import_candles

    first, last = _day("start", start), _day("end", end)
    with _progress(f"import {symbol} {resolution}") as advance:
        report = import_candles(
            file,
            symbol,
            resolution,
            start=first,
            end=last + timedelta(days=1) if last else None,
            progress=lambda done, total, day: advance(done, total, day.day),
        )
    if report.rejected:
        click.echo(report.describe_rejections(), err=True)
    click.echo(report.summary_line())
    if report.rejected:
        sys.exit(1)


@data_group.command("backfill")
@click.option("--symbol", "symbols", required=True, multiple=True, help="Market(s), repeat for several.")
@click.option(
    "--resolution",
    "resolutions",
    multiple=True,
    type=click.Choice(TRADED_RESOLUTIONS),
    help="Resolution(s), repeat for several; default: all traded ones.",
)
@click.option("--start", required=True, help="First UTC day (YYYY-MM-DD).")
@click.option("--end", default=None, help="Last UTC day, inclusive (YYYY-MM-DD); default: today (partial).")
def backfill_cmd(symbols: tuple[str, ...], resolutions: tuple[str, ...], start: str, end: str | None) -> None:
    """Fetch days from the exchange into the lake, checked day by day.

    The exchange is COINDCX_API_URL / COINDCX_PUBLIC_URL, or with neither set an in-process
    simulator. Days that fail a check are reported and not written; the exit status is then 1.
    """
    from xcoin_trading.marketdata.backfill import backfill
    from xcoin_trading.marketdata.fetch import exchange_client
    from xcoin_trading.marketdata.lake import day_range
    from xcoin_trading.timeframes import utcnow

    first = _day("start", start)
    last = _day("end", end) if end else utcnow()
    if last > utcnow():
        raise ValidationError("end", f"must not be after today, got {end}")
    days = day_range(first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"))
    settings = get_settings()
    with exchange_client(settings) as client, _progress("backfill") as advance:
        report = backfill(
            client,
            symbols,
            resolutions or TRADED_RESOLUTIONS,
            days,
            settings=settings,
            progress=lambda done, total, day: advance(
                done, total, f"{day.symbol} {day.resolution} {day.window.day}"
            ),
        )
    if report.failed:
        click.echo(report.describe_failures(), err=True)
    click.echo(report.summary_line())
    if report.failed:
        sys.exit(1)


@data_group.command("summary")
def summary_cmd() -> None:
    """Days, rows and span per symbol and resolution in the lake (through the DuckDB catalog)."""
    from xcoin_trading.marketdata.catalog import catalog_summary
    from xcoin_trading.marketdata.lake import lake_summary

    settings = get_settings()
    files = lake_summary(settings)
    if files.height == 0:
        click.echo(f"the lake at {settings.lake_dir} is empty")
        return
    rows = catalog_summary(settings).join(
        files.select("symbol", "resolution", "partial_days"), on=["symbol", "resolution"]
    )
    click.echo(
        f"{'symbol':<12} {'res':<4} {'days':>6} {'partial':>7} {'candles':>11}  first open → last open (UTC)"
    )
    order = {r: i for i, r in enumerate(TRADED_RESOLUTIONS)}
    for r in sorted(rows.iter_rows(named=True), key=lambda r: (r["symbol"], order.get(r["resolution"], 99))):
        click.echo(
            f"{r['symbol']:<12} {r['resolution']:<4} {r['days']:>6} {r['partial_days']:>7} {r['rows']:>11,}  "
            f"{r['first_open']:%Y-%m-%d %H:%M} → {r['last_open']:%Y-%m-%d %H:%M}"
        )
    click.echo(f"lake {settings.lake_dir} · catalog {settings.catalog_path}")


def register(main: click.Group) -> None:
    main.add_command(data_group)
