"""Tell Dagster what the lake holds when something other than a Dagster run wrote it.

`xcoin demo`, `xcoin data backfill` and `xcoin data import` write candle days straight into the lake
(the domain never imports Dagster). Without this, the UI shows those days as never materialized,
freshness fails and every backtest launch warns that its upstream is missing. The sensor reads the
lake's day files (paths and modification times only) and reports each new or rewritten day as a
runless materialization of `market_data/candles_<resolution>` with its `date|symbol` partition.
Days a Dagster run wrote are skipped: that run already recorded them.
"""

from __future__ import annotations

import json
from collections import defaultdict

import dagster as dg

from xcoin_pipelines.defs.marketdata.partitions import DAYS, add_symbols, candle_partition_key
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

MAX_EVENTS = 1000  # per evaluation (the sensor has 60 s); a large import is reported over a few ticks
SOURCE = "lake_sensor"


def _candle_key(resolution: str) -> dg.AssetKey:
    return dg.AssetKey(["market_data", f"candles_{resolution}"])


def _recorded_by_runs(instance: dg.DagsterInstance, key: dg.AssetKey, after_s: float) -> dict[str, float]:
    """partition → newest materialization time recorded by a run (not by this sensor) since `after_s`."""
    newest: dict[str, float] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=after_s), limit=1000, cursor=cursor
        )
        for record in page.records:
            event = record.event_log_entry
            if record.partition_key and event.run_id:  # runless events have an empty run id
                newest[record.partition_key] = max(newest.get(record.partition_key, 0.0), event.timestamp)
        if not page.has_more:
            return newest
        cursor = page.cursor


def lake_events(instance: dg.DagsterInstance, settings, cursor: list | None):
    """(materializations to report, new cursor [mtime_ns, path]) for day files changed since `cursor`."""
    from xcoin_trading.marketdata.coverage import day_files
    from xcoin_trading.marketdata.lake import partition_path

    after = tuple(cursor) if cursor else (0, "")
    changed = []
    for f in day_files(settings):
        if f.resolution not in TRADED_RESOLUTIONS:
            continue
        path = str(partition_path(f.symbol, f.resolution, f.day, settings))
        if (f.mtime_ns, path) > after:
            changed.append((f.mtime_ns, path, f))
    changed.sort(key=lambda c: (c[0], c[1]))
    changed = changed[:MAX_EVENTS]
    if not changed:
        return [], list(after) if cursor else None
    add_symbols(instance, {f.symbol for _, _, f in changed})
    since_s = changed[0][0] / 1e9 - 1
    by_runs = {
        r: _recorded_by_runs(instance, _candle_key(r), since_s) for r in {f.resolution for *_, f in changed}
    }
    known_days = set(DAYS.get_partition_keys())
    events = []
    for mtime_ns, path, f in changed:
        partition = str(candle_partition_key(f.day, f.symbol))
        if f.day not in known_days or by_runs[f.resolution].get(partition, 0.0) >= mtime_ns / 1e9:
            continue
        events.append(
            dg.AssetMaterialization(
                asset_key=_candle_key(f.resolution),
                partition=partition,
                description="written outside Dagster (CLI, demo or import); reported by lake_candles_sensor",
                metadata={"path": dg.MetadataValue.path(path), "source": SOURCE},
            )
        )
    last = changed[-1]
    return events, [last[0], last[1]]


@dg.sensor(
    name="lake_candles_sensor",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports candle days the CLI/demo wrote into the lake as materializations (partitioned).",
)
def lake_candles_sensor(context: dg.SensorEvaluationContext, xcoin: XcoinSettingsResource):
    cursor = json.loads(context.cursor) if context.cursor else None
    events, new_cursor = lake_events(context.instance, xcoin.get(), cursor)
    new = json.dumps(new_cursor) if new_cursor is not None else None
    if not events:
        return dg.SensorResult(
            skip_reason="no candle day written outside Dagster since the last look", cursor=new
        )
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        counts[e.asset_key.path[-1]] += 1
    context.log.info(f"reporting {len(events)} lake day(s): {dict(sorted(counts.items()))}")
    return dg.SensorResult(asset_events=events, cursor=new)
