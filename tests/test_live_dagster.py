"""Live execution through Dagster: the job places a candle's orders on the simulator, the candle
sensor emits one run per closed candle (bounded catch-up, no overlap), and a failed run's unfinished
executions are closed by the run-failure sensor."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.live import START
from xcoin_pipelines.defs.live import sensors as live_sensors
from xcoin_pipelines.defs.live.jobs import (
    OUTCOME_TAG,
    STATUSES_TAG,
    candle_run_config,
    live_execution_job,
    run_outcome,
)
from xcoin_pipelines.defs.live.sensors import (
    CANDLE_TAG,
    INTERVAL_TAG,
    LANE_TAG,
    RESUME_TAG,
    candle_close_sensor,
    live_run_failure_sensor,
)
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.live.registry import make_registry
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, StrategyExecution, Trade

CLOSE = START + timedelta(hours=1)
ISO = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture()
def world(live_world_factory, monkeypatch, request):
    """Three subscribers on one strategy (BTCUSDT 1m); the job's settings point at the simulator."""
    servers = getattr(request, "param", False)
    built = live_world_factory(3, servers=servers)
    monkeypatch.setenv("COINDCX_API_URL", built.sim.url)
    monkeypatch.setenv("COINDCX_PUBLIC_URL", built.sim.url)
    reset_settings()
    built.settings = get_settings()
    make_registry(built.settings.redis_url).invalidate()  # the embedded registry caches per process
    built.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    return built


def _rows(settings, model, *where):
    with session_scope(settings) as session:
        return list(session.scalars(sa.select(model).where(*where).order_by(model.id)))


def _run(instance, close=CLOSE, now=None, raise_on_error=True):
    config = candle_run_config(
        "BTCUSDT", "1m", close.strftime(ISO), (now or close + timedelta(seconds=2)).strftime(ISO)
    )
    return _execute(instance, config, raise_on_error=raise_on_error)


def _execute(instance, run_config, raise_on_error=False, **kwargs):
    """The live job in process, as a worker runs it (the real settings resource)."""
    return live_execution_job.execute_in_process(
        run_config=run_config, instance=instance, resources={"xcoin": XcoinSettingsResource()},
        raise_on_error=raise_on_error, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("world", [False, True], ids=["sqlite", "postgres_redis"], indirect=True)
def test_job_places_the_candle_once_and_reports_each_strategy(world):
    with dg.instance_for_test() as instance:
        result = _run(instance)
        assert result.success
        [row] = result.output_for_node("live_candle_close")
        assert (row["status"], row["signal"], row["subscribers"], row["trades_created"]) == (
            "COMPLETED",
            "LONG",
            3,
            3,
        )
        assert row["subscriber_outcomes"] == {"PLACED": 3}

        [execution] = _rows(world.settings, StrategyExecution)
        assert execution.dagster_run_id == result.run_id and execution.status == "COMPLETED"
        assert row["duration_ms"] == execution.duration_ms
        trades = _rows(world.settings, Trade)
        assert len(trades) == 3 and {t.status for t in trades} == {"OPEN"}
        for sub_id in world.keys:  # one buy per subscriber on the exchange's own books
            assert len(world.fills(sub_id, "buy")) == 1

        [materialization] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = materialization.step_output_data.metadata
        assert metadata["trades_created"].value == 3 and metadata["subscribers"].value == 3
        assert "COMPLETED" in metadata["strategies"].value and metadata["outcome"].value == "COMPLETED"
        assert instance.get_run_by_id(result.run_id).tags[OUTCOME_TAG] == "COMPLETED"

        # The same candle again (a retried or duplicated run) does nothing: the lock or the row stops it.
        again = _run(instance)
        assert [r["status"] for r in again.output_for_node("live_candle_close")] in (
            ["LOCKED"],
            ["ALREADY_DONE"],
        )
        for sub_id in world.keys:
            assert len(world.fills(sub_id, "buy")) == 1

        # No key or secret reaches Dagster's storage (run config, tags, events).
        stored = json.dumps([r.run_config for r in instance.get_runs()]) + json.dumps(
            [r.tags for r in instance.get_runs()]
        )
        stored += "".join(str(e) for e in instance.all_logs(result.run_id))
        for creds in world.keys.values():
            assert creds.api_key not in stored and creds.api_secret not in stored


def test_a_candle_started_too_late_is_skipped_without_orders_and_the_run_says_so(world):
    with dg.instance_for_test() as instance:
        result = _run(instance, now=CLOSE + timedelta(seconds=40))  # limit: a third of 1m
        [row] = result.output_for_node("live_candle_close")
        assert row["status"] == "SKIPPED" and "after the close" in row["error"]
        # visible on the run itself (runs list, run page), not only inside the output
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags[OUTCOME_TAG] == "SKIPPED" and tags[STATUSES_TAG] == "SKIPPED:1"
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any(m.startswith("outcome: SKIPPED") and "after the close" in m for m in logs)
        [mat] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
        assert mat.step_output_data.metadata["outcome"].value == "SKIPPED"
    assert _rows(world.settings, Order) == []


def test_run_outcome_is_the_most_alarming_status():
    assert run_outcome({}) == "NO_STRATEGY"
    assert run_outcome({"COMPLETED": 2, "NO_SIGNAL": 1}) == "COMPLETED"
    assert run_outcome({"COMPLETED": 2, "SKIPPED": 1}) == "SKIPPED"
    assert run_outcome({"SKIPPED": 2, "FAILED": 1}) == "FAILED"
    assert run_outcome({"COMPLETED": 1, "SOMETHING_NEW": 1}) == "SOMETHING_NEW"


def test_bad_close_time_fails_the_run_naming_the_field_and_changes_nothing(world):
    with dg.instance_for_test() as instance:
        config = candle_run_config("BTCUSDT", "1m", "2024-01-01T01:00:30Z")
        result = _execute(instance, config)
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.error.cause
        assert failure.cls_name == "ValidationError"
        assert "close_time" in failure.message and "boundary" in failure.message
        bad = candle_run_config("BTCUSDT", "1m", "yesterday")
        result = _execute(instance, bad)
        assert "close_time" in result.get_step_failure_events()[0].event_specific_data.error.cause.message
    assert _rows(world.settings, StrategyExecution) == []


def _evaluate(instance, monkeypatch, now, cursor=None):
    monkeypatch.setattr(live_sensors, "_now_ms", lambda: int(now.timestamp() * 1000))
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"xcoin": XcoinSettingsResource()}
    )
    return candle_close_sensor.evaluate_tick(ctx)


@pytest.mark.parametrize("world", [False, True], ids=["sqlite", "postgres_redis"], indirect=True)
def test_candle_sensor_runs_the_latest_close_first_then_each_new_one_bounded(world, monkeypatch):
    with dg.instance_for_test() as instance:
        # First start, 5 s into 01:07: only the 01:07 close, no catch-up storm.
        first = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=5))
        [req] = first.run_requests
        assert req.run_key == "BTCUSDT:1m|2024-01-01T01:07:00Z_1m"
        assert req.tags[CANDLE_TAG] == "BTCUSDT:1m" and req.tags[LANE_TAG] == "BTCUSDT:1m"
        assert req.tags[INTERVAL_TAG] == "2024-01-01T01:07:00Z_1m"
        assert req.run_config["ops"]["live_candle_close"]["config"] == {
            "symbol": "BTCUSDT", "resolution": "1m", "close_time": "2024-01-01T01:07:00Z",
        }  # fmt: skip
        assert dg.validate_run_config(live_execution_job, req.run_config)
        assert json.loads(first.cursor) == {
            "BTCUSDT:1m": int((START + timedelta(hours=1, minutes=7)).timestamp() * 1000)
        }

        # Same minute again, before the next close's prelaunch window: nothing new.
        same = _evaluate(
            instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=35), first.cursor
        )
        assert same.run_requests == [] and same.skip_message and same.cursor == first.cursor

        # Next minute: exactly the one new close.
        nxt = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=8, seconds=1), first.cursor)
        assert [r.run_key for r in nxt.run_requests] == ["BTCUSDT:1m|2024-01-01T01:08:00Z_1m"]

        # After a 6-minute pause: only the 3 newest closes, cursor at the newest.
        late = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=14, seconds=3), nxt.cursor)
        assert [r.tags[INTERVAL_TAG] for r in late.run_requests] == [
            "2024-01-01T01:12:00Z_1m", "2024-01-01T01:13:00Z_1m", "2024-01-01T01:14:00Z_1m",
        ]  # fmt: skip
        assert json.loads(late.cursor)["BTCUSDT:1m"] == int(
            (START + timedelta(hours=1, minutes=14)).timestamp() * 1000
        )


def test_candle_sensor_does_not_launch_a_close_already_stale_on_its_first_look(world, monkeypatch):
    with dg.instance_for_test() as instance:
        # 25 s into 01:07 (limit for 1m: 20 s): the run would only be SKIPPED, so none is launched
        first = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=25))
        assert first.run_requests == [] and "stale" in first.skip_message
        assert json.loads(first.cursor) == {
            "BTCUSDT:1m": int((START + timedelta(hours=1, minutes=7)).timestamp() * 1000)
        }
        nxt = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=8, seconds=3), first.cursor)
        assert [r.tags[INTERVAL_TAG] for r in nxt.run_requests] == ["2024-01-01T01:08:00Z_1m"]


def test_candle_sensor_launches_a_run_just_before_its_close_so_it_is_warm_at_the_close(world, monkeypatch):
    with dg.instance_for_test() as instance:
        first = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=30))
        early = _evaluate(
            instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=54), first.cursor
        )
        # 6 s before 01:08 closes (within PRELAUNCH_MS): the 01:08 run is requested now, once.
        assert [r.run_key for r in early.run_requests] == ["BTCUSDT:1m|2024-01-01T01:08:00Z_1m"]
        after = _evaluate(
            instance, monkeypatch, START + timedelta(hours=1, minutes=8, seconds=2), early.cursor
        )
        assert after.run_requests == []  # not launched a second time after the close


def test_candle_sensor_holds_a_key_back_while_its_run_is_in_flight(world, monkeypatch):
    with dg.instance_for_test() as instance:
        first = _evaluate(instance, monkeypatch, START + timedelta(hours=1, minutes=7, seconds=5))
        req = first.run_requests[0]
        instance.create_run_for_job(
            live_execution_job, run_config=req.run_config, tags=req.tags, status=dg.DagsterRunStatus.STARTED
        )
        held = _evaluate(
            instance, monkeypatch, START + timedelta(hours=1, minutes=8, seconds=5), first.cursor
        )
        assert held.run_requests == [] and held.cursor == first.cursor  # the 01:08 close waits, not lost
        run = instance.get_runs()[0]
        instance.report_run_canceled(run)
        freed = _evaluate(
            instance, monkeypatch, START + timedelta(hours=1, minutes=8, seconds=20), first.cursor
        )
        assert [r.tags[INTERVAL_TAG] for r in freed.run_requests] == ["2024-01-01T01:08:00Z_1m"]


def test_candle_sensor_relaunches_a_candle_that_failed_for_a_transient_cause_while_it_is_fresh(
    world, monkeypatch
):
    with dg.instance_for_test() as instance:
        first = _evaluate(instance, monkeypatch, CLOSE + timedelta(seconds=1))
        [req] = first.run_requests
        world.admin.set_faults(error_5xx=1.0, endpoints=["market_data/candles"])  # the exchange is down
        failed = _run(instance, now=CLOSE + timedelta(seconds=2))
        assert failed.success  # the run itself works; its execution is FAILED (retryable)
        [row] = _rows(world.settings, StrategyExecution)
        assert row.status == "FAILED" and row.details == {"retryable": True}
        world.admin.clear_faults()
        retry = _evaluate(instance, monkeypatch, CLOSE + timedelta(seconds=6), first.cursor)
        [again] = retry.run_requests
        assert again.run_key.startswith(req.run_key + "|retry-") and again.run_config == req.run_config
        done = _run(instance, now=CLOSE + timedelta(seconds=7))
        assert done.success
        [row] = _rows(world.settings, StrategyExecution)
        assert (row.status, row.trades_created) == ("COMPLETED", 3)
        # Done now, and past its window it is never relaunched.
        assert _evaluate(instance, monkeypatch, CLOSE + timedelta(seconds=9), first.cursor).run_requests == []


def test_candle_sensor_without_strategies_skips(live_world_factory, monkeypatch, master_key_env):
    from xcoin_trading.store.db import upgrade

    upgrade(get_settings())
    make_registry(None).invalidate()
    with dg.instance_for_test() as instance:
        result = _evaluate(instance, monkeypatch, START)
        assert result.run_requests == [] and "no active candle keys" in result.skip_message


def _dead_worker() -> str:
    import socket

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:deadbeef"


def _failure_context(instance, result):
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name="live_run_failure_sensor", dagster_event=failure, dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"xcoin": XcoinSettingsResource()},
    ).for_run_failure()  # fmt: skip


def _seed_execution(settings, strategy_id, run_id, worker, minutes, order_status=None):
    from xcoin_trading.timeframes import interval_key

    close = CLOSE + timedelta(minutes=minutes)
    with session_scope(settings) as session:
        row = StrategyExecution(strategy_id=strategy_id, interval_key=interval_key(close, "1m"), scheduled_at=close,
                                status="RUNNING", worker_id=worker, dagster_run_id=run_id, signal="LONG")  # fmt: skip
        session.add(row)
        session.flush()
        if order_status:
            sub_id = next(iter(world_subscriptions(session)))
            session.add(Order(execution_id=row.id, subscription_id=sub_id, client_order_id=f"xc-{row.id}-{sub_id}-E",
                              market="BTCUSDT", side="buy", order_type="market_order", leg="ENTRY",
                              quantity=1, status=order_status))  # fmt: skip
        return row.id


def world_subscriptions(session):
    from xcoin_trading.store.models import Subscription

    return session.scalars(sa.select(Subscription.id))


def test_failure_sensor_closes_a_dead_runs_executions_and_resumes_orders_in_flight(world):
    import os
    import socket

    with dg.instance_for_test() as instance:
        failed = _execute(
            instance, candle_run_config("BTCUSDT", "1m", "2024-01-01T01:00:30Z"),
            tags={CANDLE_TAG: "BTCUSDT:1m", INTERVAL_TAG: "2024-01-01T01:00:00Z_1m", LANE_TAG: "BTCUSDT:1m"},
        )  # fmt: skip
        assert not failed.success
        run_id = failed.run_id
        dead = _dead_worker()
        nothing_sent = _seed_execution(world.settings, world.strategy_id, run_id, dead, 1)
        in_flight = _seed_execution(
            world.settings, world.strategy_id, run_id, dead, 2, order_status="SENDING"
        )
        alive = _seed_execution(
            world.settings, world.strategy_id, run_id, f"{socket.gethostname()}:{os.getpid()}:x", 3
        )
        other_run = _seed_execution(world.settings, world.strategy_id, "another-run", dead, 4)

        request = live_run_failure_sensor(_failure_context(instance, failed))

        by_id = {r.id: r for r in _rows(world.settings, StrategyExecution)}
        assert by_id[nothing_sent].status == "FAILED"
        assert run_id in by_id[nothing_sent].error and "boundary" in by_id[nothing_sent].error
        assert by_id[in_flight].status == "RUNNING" and "resuming" in by_id[in_flight].error
        assert by_id[alive].status == "RUNNING" and by_id[alive].error is None
        assert by_id[other_run].status == "RUNNING" and by_id[other_run].error is None
        assert isinstance(request, dg.RunRequest)
        assert request.tags[RESUME_TAG] == run_id and request.tags[LANE_TAG] == "BTCUSDT:1m"
        assert request.run_config == failed.dagster_run.run_config

        # The resume run fails too: no second resume, the rest is left to the reconciler.
        resumed = _execute(instance, request.run_config, tags=request.tags)
        with session_scope(world.settings) as session:
            session.get(StrategyExecution, in_flight).dagster_run_id = resumed.run_id
        assert live_run_failure_sensor(_failure_context(instance, resumed)) is None
        row = _rows(world.settings, StrategyExecution, StrategyExecution.id == in_flight)[0]
        assert row.status == "FAILED" and "reconciler" in row.error and len(row.error) <= 2000


def test_example_instance_config_limits_each_candle_key_to_one_run(tmp_path):
    import shutil
    from pathlib import Path

    import xcoin_pipelines.defs.live as live_defs

    shutil.copy(Path(live_defs.__file__).parent / "dagster.example.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": LANE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    finally:
        instance.dispose()
