"""Backtests run outside Dagster (`xcoin backtest run`, `xcoin demo`, the REST API) are reported to it
as runless materializations of `backtests/backtest_result`, so the asset's history and the lineage
down to `snapshots/backtest_results` and `analytics/backtest_leaderboard` show every stored backtest.
A row that a Dagster run stored is skipped: that run recorded it (`backtest_id` metadata)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from xcoin_pipelines.defs.backtest.assets import metric_metadata
from xcoin_pipelines.resources import XcoinSettingsResource

BACKTEST_KEY = dg.AssetKey(["backtests", "backtest_result"])
# A Dagster run stores its row a moment before its materialization event: rows younger than this
# wait for the next evaluation, so a run's own backtest is never reported twice.
GRACE = timedelta(seconds=60)
BATCH = 200


def _ids_recorded_by_runs(instance: dg.DagsterInstance, since: datetime) -> set[int]:
    ids: set[int] = set()
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=BACKTEST_KEY, after_timestamp=since.timestamp()),
            limit=500,
            cursor=cursor,
        )
        for record in page.records:
            mat = record.asset_materialization
            value = mat.metadata.get("backtest_id") if mat and record.event_log_entry.run_id else None
            if value is not None:
                ids.add(int(value.value))
        if not page.has_more:
            return ids
        cursor = page.cursor


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def backtest_events(instance: dg.DagsterInstance, settings, after_id: int, now: datetime):
    """(materializations for rows stored outside Dagster after `after_id`, new cursor id)."""
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BacktestResult as Row

    try:
        with session_scope(settings) as session:
            rows = session.scalars(
                sa.select(Row).where(Row.id > after_id).order_by(Row.id).limit(BATCH)
            ).all()
            rows = [(r.id, _utc(r.created_at), r.strategy_code, dict(r.config), dict(r.metrics), dict(r.artifacts))
                    for r in rows]  # fmt: skip
    except sa.exc.OperationalError:  # embedded store not created yet: nothing stored anywhere
        return [], after_id
    ready = []
    for row in rows:
        if now - row[1] < GRACE:
            break
        ready.append(row)
    if not ready:
        return [], after_id
    recorded = _ids_recorded_by_runs(instance, ready[0][1] - GRACE)
    events = []
    for bid, _, code, config, metrics, artifacts in ready:
        if bid in recorded:
            continue
        inputs = {
            k: config.get(k) for k in ("symbol", "resolution", "start", "end", "data_file") if config.get(k)
        }
        events.append(
            dg.AssetMaterialization(
                asset_key=BACKTEST_KEY,
                description=f"backtest #{bid} of {code}, run outside Dagster (CLI, demo or API)",
                metadata={
                    "backtest_id": dg.MetadataValue.int(bid),
                    "strategy": dg.MetadataValue.text(code),
                    "inputs": dg.MetadataValue.json(
                        {"strategy": code, "params": config.get("params"), **inputs}
                    ),
                    "report_path": dg.MetadataValue.path(str(artifacts.get("report", ""))),
                    "source": dg.MetadataValue.text("backtest_results_sensor"),
                    **metric_metadata(metrics),
                },
            )
        )
    return events, ready[-1][0]


@dg.sensor(
    name="backtest_results_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports backtests stored by the CLI, demo or API as materializations of backtest_result.",
)
def backtest_results_sensor(context: dg.SensorEvaluationContext, xcoin: XcoinSettingsResource):
    after = int(context.cursor or 0)
    events, last = backtest_events(context.instance, xcoin.get(), after, datetime.now(UTC))
    if not events:
        return dg.SensorResult(
            skip_reason="no backtest stored outside Dagster since the last look", cursor=str(last)
        )
    context.log.info(f"reporting {len(events)} backtest(s) stored outside Dagster")
    return dg.SensorResult(asset_events=events, cursor=str(last))
