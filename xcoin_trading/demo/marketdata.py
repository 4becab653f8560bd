"""Market-data step of `xcoin demo`: ingest the last few days of the demo symbols, print the lake."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from xcoin_trading.config import Settings
from xcoin_trading.timeframes import TRADED_RESOLUTIONS, utcnow

DEMO_DAYS = 3


def ingest_demo_candles(settings: Settings, echo: Callable[[str], None], symbols: Sequence[str]) -> None:
    """Backfill the last DEMO_DAYS closed days plus today (partial) of every traded resolution.

    Re-running replaces the same days (idempotent). Uses COINDCX_API_URL, else the in-process simulator.
    """
    from xcoin_trading.marketdata.backfill import backfill
    from xcoin_trading.marketdata.catalog import catalog_summary, refresh_catalog
    from xcoin_trading.marketdata.fetch import exchange_client
    from xcoin_trading.marketdata.lake import day_range, lake_summary

    today = utcnow()
    days = day_range((today - timedelta(days=DEMO_DAYS)).strftime("%Y-%m-%d"), today.strftime("%Y-%m-%d"))
    with exchange_client(settings) as client:
        report = backfill(client, sorted(set(symbols)), TRADED_RESOLUTIONS, days, settings=settings)
    refresh_catalog(settings)
    echo("")
    echo(f"Candles: {report.summary_line()}")
    files = {
        (r["symbol"], r["resolution"]): r["partial_days"]
        for r in lake_summary(settings).iter_rows(named=True)
    }
    order = {r: i for i, r in enumerate(TRADED_RESOLUTIONS)}
    rows = sorted(
        catalog_summary(settings).iter_rows(named=True),
        key=lambda r: (r["symbol"], order.get(r["resolution"], 99)),
    )
    echo(f"  {'symbol':<12} {'res':<4} {'days':>4} {'partial':>7} {'candles':>8}  last candle open (UTC)")
    for r in rows:
        partial = files.get((r["symbol"], r["resolution"]), 0)
        echo(
            f"  {r['symbol']:<12} {r['resolution']:<4} {r['days']:>4} {partial:>7} {r['rows']:>8,}  {r['last_open']:%Y-%m-%d %H:%M}"
        )
    if report.failed:
        echo(report.describe_failures())
