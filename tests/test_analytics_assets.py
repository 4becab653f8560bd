"""Dagster: snapshots -> models -> data-test checks materialise in one run, with sqlglot lineage."""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal

import dagster as dg

from tests.fixtures.analytics import NOW


def _materialize(selection, instance):
    from xcoin_pipelines.resources import XcoinSettingsResource

    return dg.materialize(
        selection, resources={"xcoin": XcoinSettingsResource()}, instance=instance, raise_on_error=False
    )


def test_snapshots_models_and_checks_materialise_and_bad_rows_fail_their_checks(trade_book):
    from xcoin_pipelines.defs.analytics.assets import (
        DATA_TEST_CHECKS,
        MODEL_ASSETS,
        PROJECT,
        SNAPSHOT_ASSETS,
        model_key,
        snapshot_key,
    )
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Trade

    everything = [*SNAPSHOT_ASSETS, *MODEL_ASSETS, *DATA_TEST_CHECKS]
    from xcoin_pipelines.resources import XcoinSettingsResource

    resources = {"xcoin": XcoinSettingsResource()}
    graph = dg.Definitions(
        assets=[*SNAPSHOT_ASSETS, *MODEL_ASSETS], asset_checks=DATA_TEST_CHECKS, resources=resources
    ).resolve_asset_graph()
    assert set(graph.get(model_key("strategy_performance")).parent_keys) == {
        model_key("daily_pnl"), snapshot_key("trades"), snapshot_key("strategies"), snapshot_key("subscriptions"),
    }  # fmt: skip
    with dg.instance_for_test() as instance:
        clean = _materialize(everything, instance)
        assert clean.success
        assert {e.asset_key for e in clean.get_asset_materialization_events()} == {
            *(snapshot_key(t) for t in ("users", "strategies", "subscriptions", "strategy_executions", "orders",
                                        "trades", "backtest_results")),
            *(model_key(m) for m in PROJECT.models),
        }  # fmt: skip
        checks = clean.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == set(PROJECT.tests) and all(c.passed for c in checks)
        rows = {
            e.asset_key: e.event_specific_data.materialization.metadata["dagster/row_count"].value
            for e in clean.get_asset_materialization_events()
        }
        assert rows[snapshot_key("trades")] == len(trade_book.trades)

        good = next(t for t in trade_book.trades if t["status"] == "CLOSED")
        with session_scope(trade_book.settings) as s:
            base = {k: v for k, v in good.items() if k != "id"}
            s.add(
                Trade(**{**base, "exit_price": None, "pnl": None, "execution_id": None})
            )  # closed how? no order
            wrong = Trade(
                **{**base, "pnl": good["pnl"] + Decimal("0.5")}
            )  # P&L that prices and fees do not give
            s.add(wrong)
            s.flush()
            s.add(Order(trade_id=wrong.id, subscription_id=good["subscription_id"], leg="ENTRY", client_order_id="xc-wrong",
                        market=good["symbol"], side="buy", order_type="market_order", quantity=good["quantity"], status="FILLED"))  # fmt: skip
            s.add(Order(leg="ENTRY", client_order_id="xc-orphan", market="BTCUSDT", side="buy", order_type="market_order",
                        quantity=Decimal(1), status="FILLED"))  # no subscription, not EXTERNAL  # fmt: skip
        dirty = _materialize(everything, instance)
        failed = {
            c.check_name: c.metadata["failing_rows"].value
            for c in dirty.get_asset_check_evaluations()
            if not c.passed
        }
        assert failed == {
            "closed_trades_have_exit": 1,
            "trade_pnl_matches_prices_and_fees": 1,
            "trades_have_entry_order": 1,
            "orders_not_orphaned": 1,
        }


def test_a_model_that_does_not_parse_fails_its_asset_naming_file_and_position(tmp_path, sqlite_store):
    from xcoin_pipelines.defs.analytics.assets import build_model_asset
    from xcoin_trading.analytics.models import default_sql_dir, load_project

    sql_dir = tmp_path / "dbt_like_sql"
    shutil.copytree(default_sql_dir(), sql_dir)
    (sql_dir / "models" / "broken.sql").write_text("SELECT 1 +\nFROM (SELECT")
    project = load_project(sql_dir)
    with dg.instance_for_test() as instance:
        result = _materialize([build_model_asset(project, "broken")], instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "dbt_like_sql/models/broken.sql" in message and "line 2" in message


def test_analytics_schedule_targets_snapshots_models_and_checks():
    from xcoin_pipelines.definitions import defs

    d = defs()
    job = d.resolve_job_def("analytics_job")
    keys = {k.to_user_string() for k in job.asset_layer.asset_graph.get_all_asset_keys()}
    assert {"snapshots/trades", "analytics/daily_pnl", "analytics/backtest_leaderboard"} <= keys
    assert d.resolve_schedule_def("analytics_refresh_schedule").cron_schedule == "*/10 * * * *"
    assert NOW - timedelta(days=1) < NOW  # fixture clock is fixed, so periods are reproducible
