"""Candle assets, one per traded resolution, partitioned by UTC day × symbol, and the DuckDB catalog.

Each materialisation fetches one day through the real client (or resamples the lake's 1m day),
runs the quality checks and writes the day file only if no check fails. Check results travel in
the `MaterializeResult` (no check that reloads every partition). When a check fails, its result
(with the offending rows) is recorded, the step fails and the lake keeps its previous file.
"""

import warnings
from datetime import timedelta
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from xcoin_pipelines.defs.marketdata.partitions import CANDLE_PARTITIONS
from xcoin_pipelines.defs.marketdata.resources import MarketDataExchange
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

CHECKS: dict[str, str] = {
    "no_duplicate_times": "Each candle open time appears once.",
    "regular_grid": "Times ascend on the resolution's grid inside the day; gaps the exchange has only warn.",
    "ohlc_sanity": "No NaN; prices > 0; volume >= 0; high >= max(open, close); low <= min(open, close).",
    "complete_day": "A closed day covers every slot from 00:00 to 24:00 UTC (a partial day up to its newest candle).",
}

# Stale after a few missed top-ups (live resolutions) or a missed nightly run (slow ones).
FRESHNESS: dict[str, dg.FreshnessPolicy] = {
    "1m": dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=12)
    ),
    "5m": dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=12)
    ),
    "15m": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30)),
    "1h": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)),
    "4h": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=9), warn_window=timedelta(hours=5)),
    "1d": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25)),
}


class CandleSourceConfig(dg.Config):
    source: Literal["exchange", "resample"] = Field(
        default="exchange",
        description="exchange: fetch the day from CoinDCX (simulator when embedded); "
        "resample: build it from the lake's 1m candles of that day (5m and up).",
    )


def _preview(candles: Any, rows: int = 5) -> str:
    from xcoin_trading.marketdata.quality import iso

    head = "| open_time (UTC) | open | high | low | close | volume |\n|---|---|---|---|---|---|\n"
    picked = candles.head(rows).rows() + (candles.tail(1).rows() if candles.height > rows else [])
    return head + "\n".join(f"| {iso(t)} | {o} | {h} | {lo} | {c} | {v} |" for t, o, h, lo, c, v in picked)


def _check_results(report: Any) -> list[dg.AssetCheckResult]:
    results = []
    for c in report.checks:
        metadata: dict[str, Any] = {"summary": dg.MetadataValue.text(c.summary), "count": c.count}
        if c.offending:
            metadata["offending"] = dg.MetadataValue.json(list(c.offending))
        results.append(
            dg.AssetCheckResult(
                check_name=c.name,
                passed=c.passed,
                severity=dg.AssetCheckSeverity.WARN if c.severity == "warn" else dg.AssetCheckSeverity.ERROR,
                description=c.summary,
                metadata=metadata,
            )
        )
    return results


def _check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    # Partitioned checks (preview in 1.13) so the UI shows each day's check status, not the last run's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(name, asset=key, description=text, partitions_def=CANDLE_PARTITIONS)
            for name, text in CHECKS.items()
        ]


def build_candle_asset(resolution: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(["market_data", f"candles_{resolution}"])
    spec = dg.AssetSpec(
        key,
        partitions_def=CANDLE_PARTITIONS,
        group_name="market_data",
        kinds={"polars", "parquet"},
        skippable=True,  # nothing to store for a day with no closed candle yet (early top-ups)
        freshness_policy=FRESHNESS[resolution],
        description=f"{resolution} candles of one symbol for one UTC day, as "
        f"lake/candles/symbol=S/resolution={resolution}/date=D.parquet (open_time UTC ms, OHLCV).",
        tags={"xcoin/resolution": resolution},
        code_version="1",
        # 5m and up may be resampled from the same day's 1m candles (`source: resample`).
        deps=[] if resolution == "1m" else [dg.AssetKey(["market_data", "candles_1m"])],
    )

    # A multi_asset only so the check outputs may be absent on such a skipped day; one asset.
    @dg.multi_asset(
        name=f"market_data__candles_{resolution}",
        specs=[spec],
        check_specs=_check_specs(key),
        can_subset=True,
        pool="exchange_api",
    )
    def candles(
        context: dg.AssetExecutionContext,
        config: CandleSourceConfig,
        xcoin: XcoinSettingsResource,
        market_data_exchange: MarketDataExchange,
    ):
        from xcoin_trading.errors import ValidationError
        from xcoin_trading.marketdata.fetch import day_window, ingest_day
        from xcoin_trading.marketdata.quality import iso

        settings = xcoin.get()
        keys = context.partition_key.keys_by_dimension
        day, symbol = keys["date"], keys["symbol"]
        wanted = {c.name for c in context.selected_asset_check_keys}
        if key not in context.selected_asset_keys:
            raise dg.Failure(
                "the candle checks run with the fetch: re-materialise the partition to re-check it"
            )
        now_ms = market_data_exchange.now_ms(settings)
        try:
            day_window(day, resolution, now_ms)
        except ValidationError as exc:
            context.log.info(f"{symbol} {resolution} {day}: {exc.reason}; nothing to store yet")
            return
        if config.source == "exchange":
            with market_data_exchange.client(settings) as client:
                result = ingest_day(symbol, resolution, day, client=client, settings=settings, now_ms=now_ms)
        else:
            result = ingest_day(symbol, resolution, day, source="resample", settings=settings, now_ms=now_ms)
        report = result.report
        checks = [c for c in _check_results(report) if c.check_name in wanted]
        if not result.written:
            yield from checks
            raise dg.Failure(
                description=f"{symbol} {resolution} {day} failed its checks; the lake was not changed:\n"
                + report.describe(),
                metadata={"rows": report.rows, "source": result.source},
            )
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": report.rows,
                "first_open": iso(report.first_ms) if report.first_ms is not None else "",
                "last_open": iso(report.last_ms) if report.last_ms is not None else "",
                "gaps": len(report.gaps),
                "gap_ranges": dg.MetadataValue.json([g.as_dict() for g in report.gaps[:50]]),
                "partial": result.window.partial,
                "source": result.source,
                "data_source": result.kind,  # coindcx, simulator (synthetic), ... as recorded on the day
                "simulated": result.kind == "simulator",
                "exchange_requests": result.requests,
                "path": dg.MetadataValue.path(str(result.path)),
                "preview": dg.MetadataValue.md(_preview(result.candles.sort("open_time"))),
            },
            check_results=checks,
        )

    return candles


CANDLE_ASSETS = {resolution: build_candle_asset(resolution) for resolution in TRADED_RESOLUTIONS}
candles_1m, candles_5m, candles_15m, candles_1h, candles_4h, candles_1d = CANDLE_ASSETS.values()


@dg.asset(
    key=["market_data", "candle_catalog"],
    deps=list(CANDLE_ASSETS.values()),
    group_name="market_data",
    kinds={"duckdb"},
    pool="duckdb_catalog",
    description="DuckDB file with a `candles` view over the whole Parquet lake (hive partitioning). "
    "DuckDB only reads the lake; the file is rebuilt and renamed, never written by two runs.",
)
def candle_catalog(context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource) -> dg.MaterializeResult:
    from xcoin_trading.marketdata.catalog import catalog_summary, refresh_catalog

    settings = xcoin.get()
    info = refresh_catalog(settings)
    summary = catalog_summary(settings)
    table = (
        "| symbol | resolution | days | candles | first | last |\n|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r['symbol']} | {r['resolution']} | {r['days']} | {r['rows']:,} | {r['first_open']} | {r['last_open']} |"
            for r in summary.iter_rows(named=True)
        )
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(info.path)),
            "lake_files": info.files,
            "dagster/row_count": int(summary["rows"].sum()) if summary.height else 0,
            "summary": dg.MetadataValue.md(table),
        }
    )
