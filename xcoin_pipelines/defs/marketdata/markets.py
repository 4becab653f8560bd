"""`market_data/markets`: the exchange's market list (spot `markets_details` + futures instruments),
stored in the lake with its fetch time; refreshed daily by `market_data_markets_schedule` and by
`xcoin markets refresh`. Sizing, validation and backtests read it through `default_market`."""

import dagster as dg

from xcoin_pipelines.defs.marketdata.resources import MarketDataExchange
from xcoin_pipelines.resources import XcoinSettingsResource


@dg.asset(
    key=["market_data", "markets"],
    group_name="market_data",
    kinds={"json"},
    description="Every CoinDCX spot market and futures instrument: precision, step, minimums, status.",
)
def markets(
    context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource, market_data_exchange: MarketDataExchange
) -> dg.MaterializeResult:
    from xcoin_trading.exchange.catalog import catalog_path, refresh_markets

    settings = xcoin.get()
    with market_data_exchange.client(settings) as client:
        source = market_data_exchange.api_url or settings.api_url or "the embedded simulator"
        catalog = refresh_markets(client, source, settings)
    every = [*catalog.spot.values(), *catalog.futures.values()]
    inactive = sorted(m.symbol for m in every if m.status != "active")
    return dg.MaterializeResult(
        metadata={
            "spot_markets": len(catalog.spot),
            "futures_instruments": len(catalog.futures),
            "inactive": dg.MetadataValue.json(inactive),
            "fetched_at": catalog.fetched_at.isoformat() if catalog.fetched_at else "",
            "source": source,
            "path": dg.MetadataValue.path(str(catalog_path(settings))),
        }
    )


markets_job = dg.define_asset_job(
    "market_data_markets_job",
    selection=dg.AssetSelection.assets(markets),
    executor_def=dg.in_process_executor,
    tags={"xcoin/kind": "market_data"},
)
markets_schedule = dg.ScheduleDefinition(
    name="market_data_markets_schedule",
    job=markets_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    description="Refresh the market list every day at 00:15 UTC (listings, precisions and statuses change).",
)
