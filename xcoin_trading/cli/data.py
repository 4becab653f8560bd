"""`xcoin data`: import candle files, backfill from the exchange, and look at the lake."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import overload

import click

from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.timeframes import TRADED_RESOLUTIONS


@overload
def _day(field: str, value: str) -> datetime: ...
@overload
def _day(field: str, value: str | None) -> datetime | None: ...
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
@click.option(
    "--source",
    "origin",
    type=click.Choice(["binance", "coindcx", "file"]),
    default=None,
    help="Where the candles come from, recorded on each day; default: detected from the format.",
)
def import_cmd(
    file: Path, symbol: str, resolution: str, start: str | None, end: str | None, origin: str | None
) -> None:
    """Load a candle file into the lake, one checked day at a time.

    FILE is Parquet or CSV with open_time (epoch ms/µs or ISO time, UTC), open, high, low, close,
    volume; a Binance kline file from data.binance.vision (CSV with or without header, or its .zip;
    ms or µs times); or CoinDCX candle JSON. A day with bad rows is reported and not written; the
    exit status is then 1.
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
            origin=origin,
        )
    _outcome(report.summary_line(), report.describe_rejections() if report.rejected else None)


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
    if settings.api_url is None and settings.public_url is None:
        from xcoin_trading.marketdata.candles import check_symbol

        for symbol in symbols:  # a wrong symbol is the first thing to fix
            check_symbol(symbol)
        from xcoin_trading.exchange.embedded import EMBEDDED_HISTORY_DAYS, embedded_history_start_ms
        from xcoin_trading.timeframes import from_ms

        earliest = from_ms(embedded_history_start_ms())
        if first < earliest:
            raise ValidationError(
                "start",
                f"{start} is before the embedded simulator's history: with no COINDCX_API_URL set it serves "
                f"synthetic candles for the last {EMBEDDED_HISTORY_DAYS} days only (from {earliest:%Y-%m-%d}); "
                "load real history with `xcoin data import` (e.g. Binance's kline files) or point "
                "COINDCX_API_URL/COINDCX_PUBLIC_URL at CoinDCX",
            )
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
    _outcome(report.summary_line(), report.describe_failures() if report.failed else None)


def _outcome(summary: str, refused: str | None) -> None:
    """What was refused on stderr, then the one summary line; exit status 1 when anything was."""
    if refused is not None:
        click.echo(refused, err=True)
    click.echo(summary)
    if refused is not None:
        sys.exit(1)


@data_group.command("summary")
@click.option("--gaps", "show_gaps", default=3, show_default=True, help="Gap ranges listed per row.")
def summary_cmd(show_gaps: int) -> None:
    """Days, rows, span, sources and gaps per symbol and resolution in the lake (through DuckDB).

    Days fetched from a simulator are synthetic and marked SIMULATOR; a gap is a break in the
    time grid inside the stored span (missing candles, or whole missing days)."""
    from xcoin_trading.marketdata.catalog import catalog_gaps, catalog_summary
    from xcoin_trading.marketdata.lake import lake_summary, source_label

    settings = get_settings()
    files = lake_summary(settings)
    if files.height == 0:
        click.echo(f"the lake at {settings.lake_dir} is empty")
        return
    rows = catalog_summary(settings).join(
        files.select("symbol", "resolution", "partial_days", "sources", "simulated_days"),
        on=["symbol", "resolution"],
    )
    gaps = catalog_gaps(settings)
    click.echo(
        f"{'symbol':<12} {'res':<4} {'days':>6} {'partial':>7} {'candles':>11} {'gaps':>5} {'missing':>8}  "
        f"{'first open → last open (UTC)':<35} source"
    )
    order = {r: i for i, r in enumerate(TRADED_RESOLUTIONS)}
    simulated = 0
    for r in sorted(rows.iter_rows(named=True), key=lambda r: (r["symbol"], order.get(r["resolution"], 99))):
        g = gaps.get((r["symbol"], r["resolution"]), [])
        missing = sum(n for _, _, n in g)
        sources = "+".join(source_label(x) for x in r["sources"].split("+"))
        simulated += r["simulated_days"]
        click.echo(
            f"{r['symbol']:<12} {r['resolution']:<4} {r['days']:>6} {r['partial_days']:>7} {r['rows']:>11,} "
            f"{len(g):>5} {missing:>8,}  "
            f"{r['first_open']:%Y-%m-%d %H:%M} → {r['last_open']:%Y-%m-%d %H:%M}   {sources}"
        )
        for after, before, n in g[:show_gaps]:
            click.echo(
                f"    gap: {n:,} candle(s) missing after {after:%Y-%m-%d %H:%M} (next {before:%Y-%m-%d %H:%M})"
            )
        if len(g) > show_gaps:
            click.echo(f"    … {len(g) - show_gaps} more gap(s)")
    if simulated:
        click.echo(f"{simulated} day(s) are SIMULATOR data: synthetic prices, not market history")
    click.echo(f"lake {settings.lake_dir} · catalog {settings.catalog_path}")


def register(main: click.Group) -> None:
    main.add_command(data_group)
