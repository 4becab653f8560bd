"""Exit codes as docs/cli.md states them (2 bad input, 1 work failed, 0 only when all succeeded), and a
candle that FAILED for a transient cause is run again while it is fresh instead of ALREADY_DONE."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import shared_data_file
from tests.fixtures.live import START
from xcoin_trading.cli import main
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.live.retries import retryable_candles
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import StrategyExecution, Trade
from xcoin_trading.timeframes import interval_key

CLOSE = START + timedelta(hours=1)
DEAD_URL = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused


def _xcoin(world, *args: str, **env: str) -> subprocess.CompletedProcess:
    xcoin = str(Path(sys.executable).parent / "xcoin")
    return subprocess.run([xcoin, *args], env=world.env(**env), capture_output=True, text=True, timeout=300)


def _executions(world) -> list[StrategyExecution]:
    with session_scope(world.settings) as session:
        return list(session.scalars(sa.select(StrategyExecution).order_by(StrategyExecution.id)))


def test_live_tick_with_the_exchange_unreachable_exits_1_and_the_rerun_trades_the_candle(live_world_factory):
    world = live_world_factory(2)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    failed = world.tick(CLOSE, COINDCX_API_URL=DEAD_URL, COINDCX_PUBLIC_URL=DEAD_URL)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert ": FAILED" in failed.stdout and "did not complete" in failed.stderr
    [row] = _executions(world)
    assert row.status == "FAILED" and row.details == {"retryable": True}
    # The operator fixes the settings and runs the same candle again: it trades (not ALREADY_DONE).
    done = world.tick(CLOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": COMPLETED signal=LONG subscribers=2 trades=2" in done.stdout
    [row] = _executions(world)
    assert row.status == "COMPLETED" and row.error is None
    again = world.tick(CLOSE)
    assert again.returncode == 0 and "ALREADY_DONE" in again.stdout


@pytest.mark.parametrize("servers", [False, True], ids=["embedded", "postgres+redis"])
def test_a_candle_not_yet_published_is_retried_by_the_next_tick_within_its_window(
    live_world_factory, servers
):
    world = live_world_factory(2, servers=servers)
    close_ms = int(CLOSE.timestamp() * 1000)
    world.admin.advance(to_ms=close_ms - 60_000)  # the exchange is one candle behind
    first = live_context(world.settings)
    [report] = run_candle_close(first, "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=2))
    assert report.status == "FAILED" and "has not published" in report.error
    with session_scope(world.settings) as session:
        [candle] = retryable_candles(session, CLOSE + timedelta(seconds=5))
        assert (candle.candle_key, candle.close_ms) == ("BTCUSDT:1m", close_ms)
        assert retryable_candles(session, CLOSE + timedelta(seconds=21)) == []  # 1m: fresh for 20 s
    world.admin.advance(to_ms=close_ms)
    # Another worker (another process of the sensor's next run) takes it: the lock was let go.
    second = live_context(world.settings)
    assert second.worker_id != first.worker_id
    [report] = run_candle_close(second, "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=8))
    assert (report.status, report.trades_created) == ("COMPLETED", 2), report.error
    [row] = _executions(world)
    assert row.status == "COMPLETED" and row.worker_id == second.worker_id
    with session_scope(world.settings) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Trade)) == 2


def test_a_transient_failure_past_the_staleness_window_stays_failed(live_world_factory):
    world = live_world_factory(1)
    close_ms = int(CLOSE.timestamp() * 1000)
    world.admin.advance(to_ms=close_ms - 60_000)
    [report] = run_candle_close(live_context(world.settings), "BTCUSDT", "1m", CLOSE, now=CLOSE)
    assert report.status == "FAILED"
    world.admin.advance(to_ms=close_ms)
    late = CLOSE + timedelta(seconds=25)  # a 1m candle is stale 20 s after its close
    [report] = run_candle_close(live_context(world.settings), "BTCUSDT", "1m", CLOSE, now=late)
    assert report.status == "ALREADY_DONE"
    assert [r.status for r in _executions(world)] == ["FAILED"]


def test_a_failure_that_is_not_transient_is_not_retried(live_world_factory):
    world = live_world_factory(1)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    with session_scope(world.settings) as session:  # a FAILED row without the transient mark
        session.add(StrategyExecution(strategy_id=world.strategy_id, interval_key=interval_key(CLOSE, "1m"),
                                      scheduled_at=CLOSE, status="FAILED", error="strategy raised"))  # fmt: skip
    [report] = run_candle_close(live_context(world.settings), "BTCUSDT", "1m", CLOSE, now=CLOSE)
    assert report.status == "ALREADY_DONE"


def test_reconcile_once_with_the_exchange_unreachable_exits_1(live_world_factory):
    world = live_world_factory(1)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    assert world.tick(CLOSE).returncode == 0  # an open trade with a resting take profit to follow
    ok = _xcoin(world, "reconcile", "--once")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    down = _xcoin(world, "reconcile", "--once", COINDCX_API_URL=DEAD_URL, COINDCX_PUBLIC_URL=DEAD_URL)
    assert down.returncode == 1, down.stdout + down.stderr
    assert "(1 unreachable)" in down.stdout


def test_an_invalid_upload_exits_2_and_is_stored_with_its_reasons(tmp_path, master_key_env):
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    runner.invoke(main, ["users", "create", "--email", "e@x.io", "--password", "long-password"])
    cheat = tmp_path / "cheat.py"
    cheat.write_text(
        "import polars as pl\n\ndef signals(candles, params):\n"
        "    return candles.with_columns(pl.when(pl.col('close').shift(-1) > pl.col('close'))"
        ".then(pl.lit('LONG')).otherwise(pl.lit('HOLD')).alias('action'),"
        " pl.lit(None, pl.Float64).alias('stop_loss'), pl.lit(None, pl.Float64).alias('take_profit'))\n"
    )
    out = runner.invoke(main, ["strategies", "add", str(cheat), "--user", "e@x.io", "--code", "cheat",
                               "--symbol", "BTCUSDT", "--resolution", "5m"])  # fmt: skip
    assert out.exit_code == 2 and "added: INVALID" in out.output and "looks ahead" in out.output


def test_a_sweep_whose_every_combination_fails_exits_2_and_a_partly_valid_one_exits_0():
    data = str(shared_data_file("BTCUSDT-1m-2024-01.parquet"))
    runner = CliRunner()
    base = ["backtest", "sweep", "--strategy", "sma_crossover", "--data", data, "--end", "2024-01-03"]
    none = runner.invoke(main, [*base, "--grid", "fast=60,70;slow=10,20"])
    assert none.exit_code == 2 and "4 of 4 combinations are invalid" in none.output
    some = runner.invoke(main, [*base, "--grid", "fast=10,60;slow=50"])
    assert some.exit_code == 0 and "1 of 2 combinations are invalid" in some.output


def test_an_exchange_failure_is_work_failed_not_bad_input():
    from xcoin_trading.cli import exit_code_of
    from xcoin_trading.errors import NotFound, ValidationError
    from xcoin_trading.exchange.errors import ExchangeUnavailable, InsufficientFunds

    assert exit_code_of(ExchangeUnavailable("connection refused")) == 1
    assert exit_code_of(InsufficientFunds("Insufficient funds")) == 1
    assert exit_code_of(ValidationError("capital", "must be > 0")) == 2
    assert exit_code_of(NotFound("user x not found")) == 2
