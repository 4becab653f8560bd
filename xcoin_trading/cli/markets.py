"""`xcoin markets refresh | list | show`: the exchange's market list (precision, step, minimums, status)."""

from __future__ import annotations

import json

import click

from xcoin_trading.config import get_settings


@click.group("markets")
def markets_group() -> None:
    """Markets the exchange lists (stored in the lake; refreshed daily by Dagster)."""


@markets_group.command("refresh")
def refresh_cmd() -> None:
    """Fetch every spot market and futures instrument from the exchange and store the list."""
    from xcoin_trading.exchange.catalog import catalog_path, refresh_markets
    from xcoin_trading.marketdata.fetch import exchange_client

    settings = get_settings()
    with exchange_client(settings) as client:
        source = settings.api_url or "the embedded simulator"
        catalog = refresh_markets(client, source, settings)
    inactive = sum(m.status != "active" for m in [*catalog.spot.values(), *catalog.futures.values()])
    click.echo(f"stored {catalog.describe()}; {inactive} not active → {catalog_path(settings)}")


def _row(m) -> dict:
    return m.to_json()


@markets_group.command("list")
@click.option("--kind", type=click.Choice(["spot", "futures", "all"]), default="all", show_default=True)
@click.option("--quote", default=None, help="Only markets priced in this currency, e.g. USDT or INR.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_cmd(kind: str, quote: str | None, as_json: bool) -> None:
    """Every known market with its status, precisions, step and minimums."""
    from xcoin_trading.exchange.catalog import load_catalog

    catalog = load_catalog(get_settings())
    markets = [*(catalog.spot.values() if kind != "futures" else ()),
               *(catalog.futures.values() if kind != "spot" else ())]  # fmt: skip
    if quote:
        markets = [m for m in markets if m.base == quote.upper()]
    if as_json:
        click.echo(json.dumps([_row(m) for m in markets], indent=1))
        return
    click.echo(
        f"{'market':<16} {'kind':<8} {'status':<9} {'tick':>12} {'step':>12} {'min qty':>12} {'min value':>10}"
    )
    for m in markets:
        click.echo(
            f"{m.symbol:<16} {m.kind:<8} {m.status:<9} {m.tick.normalize():>12f} {m.step.normalize():>12f} "
            f"{m.effective_min_quantity.normalize():>12f} {m.min_notional.normalize():>10f}"
        )
    click.echo(f"{len(markets)} markets · {catalog.describe()}")


@markets_group.command("show")
@click.argument("symbol")
def show_cmd(symbol: str) -> None:
    """One market's metadata as JSON (exit 2 when the exchange does not list it)."""
    from xcoin_trading.exchange.catalog import load_catalog

    click.echo(json.dumps(_row(load_catalog(get_settings()).find(symbol)), indent=1))


def register(main: click.Group) -> None:
    main.add_command(markets_group)
