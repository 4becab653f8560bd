"""Lineage tells the truth: candle days written outside Dagster (CLI, demo) are reported to it with
their partitions, and the edges the code really follows are in the asset graph."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import dagster as dg
import pytest

from tests.conftest import shared_data_file
from xcoin_pipelines.defs.marketdata.lake_sensor import lake_candles_sensor
from xcoin_pipelines.resources import XcoinSettingsResource

CANDLES_1M = dg.AssetKey(["market_data", "candles_1m"])


def _import(day_from: int, day_to: int) -> None:
    from xcoin_trading.marketdata.importer import import_candles

    import_candles(
        shared_data_file("BTCUSDT-1m-2024-01.parquet"), "BTCUSDT", "1m",
        start=datetime(2024, 1, day_from, tzinfo=UTC), end=datetime(2024, 1, day_to, tzinfo=UTC),
    )  # fmt: skip


@pytest.fixture()
def lake_btc_days():
    _import(2, 5)


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[int, str | None]:
    """One sensor evaluation, its events reported as the daemon does; (events, new cursor)."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"xcoin": XcoinSettingsResource()}
    )
    data = lake_candles_sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return len(data.asset_events), data.cursor


def test_days_written_by_the_cli_become_materialized_partitions_once():
    _import(2, 5)
    with dg.instance_for_test() as instance:
        count, cursor = _tick(instance, None)
        assert count == 3
        assert instance.get_dynamic_partitions("market_symbols") == ["BTCUSDT"]
        assert instance.get_materialized_partitions(CANDLES_1M) == {
            "2024-01-02|BTCUSDT", "2024-01-03|BTCUSDT", "2024-01-04|BTCUSDT",
        }  # fmt: skip
        # nothing new: nothing reported (the cursor holds the newest file seen)
        assert _tick(instance, cursor) == (0, cursor)

        # a day rewritten later is a new materialization of that partition only
        from xcoin_trading.marketdata.lake import partition_path

        path = partition_path("BTCUSDT", "1m", "2024-01-03")
        os.utime(path, ns=(path.stat().st_atime_ns, json.loads(cursor)[0] + 1_000_000_000))
        count, _ = _tick(instance, cursor)
        assert count == 1
        latest = instance.get_latest_materialization_event(CANDLES_1M)
        assert latest.dagster_event.partition == "2024-01-03|BTCUSDT" and latest.run_id == ""


def test_a_day_a_dagster_run_recorded_is_not_reported_again():
    _import(2, 3)
    with dg.instance_for_test() as instance:
        # a run that wrote the day recorded it after writing the file
        @dg.asset(key=CANDLES_1M, partitions_def=dg.StaticPartitionsDefinition(["2024-01-02|BTCUSDT"]))
        def fake_run_write():
            return None

        assert dg.materialize([fake_run_write], instance=instance, partition_key="2024-01-02|BTCUSDT").success
        assert _tick(instance, None)[0] == 0


def test_missing_edges_are_in_the_graph():
    from xcoin_pipelines.definitions import defs

    graph = defs().resolve_asset_graph()
    assert (
        dg.AssetKey(["backtests", "backtest_result"])
        in graph.get(dg.AssetKey(["snapshots", "backtest_results"])).parent_keys
    )
    assert (
        dg.AssetKey(["snapshots", "backtest_results"])
        in graph.get(dg.AssetKey(["analytics", "backtest_leaderboard"])).parent_keys
    )
    for resolution in ("5m", "15m", "1h", "4h", "1d"):
        parents = graph.get(dg.AssetKey(["market_data", f"candles_{resolution}"])).parent_keys
        assert parents == {CANDLES_1M}


def test_backtests_stored_outside_dagster_are_reported_once_and_runs_own_are_not(lake_btc_days):
    from datetime import timedelta

    from xcoin_pipelines.defs.backtest.assets import backtest_result
    from xcoin_pipelines.defs.backtest.sensors import BACKTEST_KEY, backtest_events
    from xcoin_trading.backtest.service import BacktestRequest, execute
    from xcoin_trading.config import get_settings

    # the CLI / demo path: the domain stores a backtest, Dagster is not involved
    _, cli = execute(BacktestRequest("sma_crossover", "BTCUSDT", "1m", "2024-01-02", "2024-01-03"))
    later = datetime.now(UTC) + timedelta(minutes=5)
    with dg.instance_for_test() as instance:
        # too fresh: a run may not have recorded its own row yet, so it waits
        assert backtest_events(instance, get_settings(), 0, datetime.now(UTC)) == ([], 0)
        # a backtest a Dagster run stored (and recorded)
        assert dg.materialize(
            [backtest_result], instance=instance, resources={"xcoin": XcoinSettingsResource()}
        ).success
        events, last = backtest_events(instance, get_settings(), 0, later)
        assert [e.metadata["backtest_id"].value for e in events] == [cli.id] and last == cli.id + 1
        for event in events:
            instance.report_runless_asset_event(event)
        assert backtest_events(instance, get_settings(), last, later) == ([], last)
        runless = [
            r.asset_materialization.metadata["backtest_id"].value
            for r in instance.fetch_materializations(BACKTEST_KEY, limit=10).records
            if not r.event_log_entry.run_id
        ]
        assert runless == [cli.id]
