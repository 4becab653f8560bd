"""Schedules: which partitions the nightly close and the intraday top-up request."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from xcoin_pipelines.defs.marketdata.assets import CANDLE_ASSETS
from xcoin_pipelines.defs.marketdata.partitions import SYMBOLS, add_symbols, registered_symbols
from xcoin_pipelines.defs.marketdata.resources import MarketDataExchange
from xcoin_pipelines.defs.marketdata.schedules import (
    build_daily_close_schedule,
    build_topup_schedule,
    market_data_daily_close_schedule,
    market_data_topup_schedule,
)
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.errors import ValidationError


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _requests(schedule, instance, at: datetime):
    """Evaluate one tick the way the daemon does, inside a repository holding the candle assets."""
    repo = dg.Definitions(
        assets=list(CANDLE_ASSETS.values()),
        schedules=[schedule],
        resources={"xcoin": XcoinSettingsResource(), "market_data_exchange": MarketDataExchange()},
    ).get_repository_def()
    ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=repo)
    return repo.get_schedule_def(schedule.name).evaluate_tick(ctx)


def test_nightly_close_requests_yesterday_for_every_registered_symbol(instance):
    assert add_symbols(instance, ["ETHUSDT", "BTCUSDT"]) == ["BTCUSDT", "ETHUSDT"]
    tick = _requests(market_data_daily_close_schedule, instance, datetime(2024, 3, 1, 0, 5, tzinfo=UTC))
    keys = [r.partition_key for r in tick.run_requests]
    assert keys == ["2024-02-29|BTCUSDT", "2024-02-29|ETHUSDT"]  # leap day: the day before March 1st
    assert [r.run_key for r in tick.run_requests] == ["close|2024-02-29|BTCUSDT", "close|2024-02-29|ETHUSDT"]
    assert market_data_daily_close_schedule.cron_schedule == "5 0 * * *"
    assert market_data_daily_close_schedule.execution_timezone == "UTC"


def _subscribe_someone_to(settings, symbol: str, *, paused: bool = False) -> None:
    from xcoin_trading.services import credentials, strategies, subscriptions, users
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.vault import Vault

    with session_scope(settings) as session:
        user = users.register_user(session, f"{symbol.lower()}@x.io", "password-123")
        credentials.add_credential(
            session, Vault.from_settings(settings), user.id, f"key-{symbol}-12345", "secret"
        )
        strategy = strategies.create_strategy(session, user.id, name=symbol, code=f"s-{symbol.lower()}", symbol=symbol,
                                              resolution="1m", builtin="sma_crossover")  # fmt: skip
        sub = subscriptions.subscribe(session, user.id, strategy.id, capital=100, risk_per_trade="0.01")
        if paused:
            subscriptions.pause(session, user.id, sub.id)


def test_topup_requests_today_and_a_distinct_run_per_tick(instance, sqlite_store):
    add_symbols(instance, ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    _subscribe_someone_to(sqlite_store, "BTCUSDT")
    _subscribe_someone_to(sqlite_store, "SOLUSDT", paused=True)  # paused: nobody trades it live
    first = _requests(
        market_data_topup_schedule, instance, datetime(2024, 3, 1, 13, 5, tzinfo=UTC)
    ).run_requests
    second = _requests(
        market_data_topup_schedule, instance, datetime(2024, 3, 1, 13, 10, tzinfo=UTC)
    ).run_requests
    assert [r.partition_key for r in first + second] == ["2024-03-01|BTCUSDT", "2024-03-01|BTCUSDT"]
    assert first[0].run_key != second[0].run_key
    assert market_data_topup_schedule.cron_schedule == "*/5 * * * *"


def test_topup_takes_live_symbols_from_the_seam_not_from_all_registered(instance):
    add_symbols(instance, ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    live = build_topup_schedule(lambda ctx: ["SOLUSDT"], name="live_only_topup")
    tick = _requests(live, instance, datetime(2024, 3, 1, 13, 5, tzinfo=UTC))
    assert [r.partition_key for r in tick.run_requests] == ["2024-03-01|SOLUSDT"]


def test_no_symbols_skips_with_a_reason(instance):
    tick = _requests(build_daily_close_schedule(), instance, datetime(2024, 3, 1, 0, 5, tzinfo=UTC))
    assert tick.run_requests == [] and "no active symbols" in tick.skip_message


def test_a_misspelled_symbol_never_becomes_a_partition(instance):
    with pytest.raises(ValidationError) as err:
        add_symbols(instance, ["BTCUSDT", "BTCUSTD"])
    assert err.value.field == "symbol" and "BTCUSTD" in err.value.reason
    assert registered_symbols(instance) == []
    assert add_symbols(instance, ["BTCUSDT"]) == ["BTCUSDT"]
    assert add_symbols(instance, ["BTCUSDT"]) == []  # idempotent
    assert instance.get_dynamic_partitions(SYMBOLS.name) == ["BTCUSDT"]


def test_the_code_location_loads_with_candle_assets_checks_and_schedules():
    from xcoin_pipelines.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    for res in ("1m", "5m", "15m", "1h", "4h", "1d"):
        assert f"market_data/candles_{res}" in keys
    assert "market_data/candle_catalog" in keys
    graph = d.resolve_asset_graph()
    checks = {
        c.name for c in graph.asset_check_keys if c.asset_key.to_user_string() == "market_data/candles_1m"
    }
    assert checks == {"no_duplicate_times", "regular_grid", "ohlc_sanity", "complete_day"}
    assert d.resolve_schedule_def("market_data_daily_close_schedule")
    assert d.resolve_schedule_def("market_data_topup_schedule")
    catalog = graph.get(dg.AssetKey(["market_data", "candle_catalog"]))
    assert dg.AssetKey(["market_data", "candles_1m"]) in catalog.parent_keys


def test_the_symbols_sensor_adds_each_active_strategy_market_once(instance, sqlite_store):
    from xcoin_pipelines.defs.marketdata.sensors import market_data_symbols_sensor
    from xcoin_trading.services import strategies, users
    from xcoin_trading.store.db import session_scope

    with session_scope(sqlite_store) as session:
        author = users.register_user(session, "quant@example.com", "long-enough-password")
        for code, symbol in (("s-a", "BTCUSDT"), ("s-b", "B-ETH_USDT"), ("s-c", "BTCUSDT")):
            strategies.create_strategy(
                session,
                author.id,
                name=code,
                code=code,
                symbol=symbol,
                resolution="1m",
                builtin="sma_crossover",
            )

    def tick():
        ctx = dg.build_sensor_context(instance=instance, resources={"xcoin": XcoinSettingsResource()})
        return market_data_symbols_sensor(ctx)

    first = tick()
    (request,) = first.dynamic_partitions_requests
    assert sorted(request.partition_keys) == ["B-ETH_USDT", "BTCUSDT"]
    instance.add_dynamic_partitions(SYMBOLS.name, list(request.partition_keys))
    assert isinstance(tick(), dg.SkipReason)
