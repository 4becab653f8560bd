"""A failed live run's executions, closed by the domain (the Dagster sensor only calls it), and the one
worker-alive check that this, lock take-overs and the reconciler share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from xcoin_trading.live.locks import WorkerState, holder_is_dead, worker_state
from xcoin_trading.live.run_failures import claimed_any, record_run_failure
from xcoin_trading.services import credentials, strategies, subscriptions, users
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import ExecutionShard, Order, StrategyExecution
from xcoin_trading.vault import Vault

CLOSE = datetime(2024, 1, 1, 1, tzinfo=UTC)
HERE = socket.gethostname()


def _dead_worker() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{HERE}:{proc.pid}:deadbeef"


def test_one_worker_check_tells_alive_dead_elsewhere_and_unknown_apart():
    assert worker_state(f"{HERE}:{os.getpid()}:x") is WorkerState.ALIVE
    assert worker_state(f"{HERE}:1:x") is WorkerState.ALIVE  # pid 1 exists (another user's: still alive)
    assert worker_state(_dead_worker()) is WorkerState.DEAD
    assert worker_state(f"not-{HERE}:{os.getpid()}:x") is WorkerState.ELSEWHERE
    assert worker_state("garbage") is WorkerState.UNKNOWN
    assert worker_state(f"{HERE}:pid:x") is WorkerState.UNKNOWN
    assert worker_state("") is WorkerState.NONE and worker_state(None) is WorkerState.NONE
    # A lock or a RUNNING row is taken over only from a worker proven dead.
    assert holder_is_dead(_dead_worker())
    for holder in (f"{HERE}:{os.getpid()}:x", f"not-{HERE}:1:x", "garbage", ""):
        assert not holder_is_dead(holder)


def _seed(settings) -> tuple[int, int]:
    vault = Vault.from_settings(settings)
    with session_scope(settings) as session:
        user = users.register_user(session, "runs@example.com", "a-long-password-1", "Runs")
        credentials.add_credential(session, vault, user.id, "key-runs-1", "secret-runs-1")
        strategy = strategies.create_strategy(
            session, user.id, code="run-failures", name="run failures", builtin="sma_crossover",
            symbol="BTCUSDT", resolution="1m", params={"fast": 5, "slow": 20}, lookback=50,
        )  # fmt: skip
        sub = subscriptions.subscribe(session, user.id, strategy.id, capital=1000, risk_per_trade="0.01")
        return strategy.id, sub.id


def _execution(settings, strategy_id, sub_id, run_id, worker, minute, order_status=None) -> int:
    close = CLOSE + timedelta(minutes=minute)
    with session_scope(settings) as session:
        row = StrategyExecution(strategy_id=strategy_id, interval_key=f"{close:%Y-%m-%dT%H:%M:%SZ}_1m",
                                scheduled_at=close, status="RUNNING", worker_id=worker, dagster_run_id=run_id)  # fmt: skip
        session.add(row)
        session.flush()
        if order_status:
            session.add(Order(execution_id=row.id, subscription_id=sub_id, client_order_id=f"xc-{row.id}-E",
                              market="BTCUSDT", side="buy", order_type="market_order", leg="ENTRY",
                              quantity=1, status=order_status))  # fmt: skip
        return row.id


def test_a_failed_runs_executions_are_closed_resumed_or_left_to_a_live_worker(store):
    strategy_id, sub_id = _seed(store)
    run = "run-1"

    def execution(worker, minute, order_status=None):
        return _execution(store, strategy_id, sub_id, run, worker, minute, order_status)

    dead, alive = _dead_worker(), f"{HERE}:{os.getpid()}:x"
    ids = {
        "dead": execution(dead, 1),
        "dead with an order in flight": execution(dead, 2, "SENDING"),
        "dead, order final": execution(dead, 3, "FILLED"),
        "alive": execution(alive, 4),
        "elsewhere": execution(f"not-{HERE}:1:x", 5),  # the run failed: its worker is gone
        "unknown id": execution("garbage", 6),
        "no worker": execution(None, 7),
    }
    other_run = _execution(store, strategy_id, sub_id, "run-2", dead, 8)

    outcome = record_run_failure(store, run, "boom " + "x" * 3000, may_resume=True)

    assert sorted(outcome.failed) == sorted(
        ids[k] for k in ("dead", "dead, order final", "elsewhere", "no worker")
    )
    assert outcome.resumable == [ids["dead with an order in flight"]]
    with session_scope(store) as session:
        rows = {r.id: r for r in session.scalars(sa.select(StrategyExecution))}
    for key in ("dead", "elsewhere", "no worker"):
        row = rows[ids[key]]
        assert row.status == "FAILED" and row.finished_at is not None
        assert row.error.startswith("Dagster run run-1 failed: boom") and len(row.error) == 2000
    resumed = rows[ids["dead with an order in flight"]]
    assert resumed.status == "RUNNING" and resumed.finished_at is None
    for key in ("alive", "unknown id"):
        assert rows[ids[key]].status == "RUNNING" and rows[ids[key]].error is None
    assert rows[other_run].status == "RUNNING" and rows[other_run].error is None
    assert claimed_any(store, run) and not claimed_any(store, "never-claimed")

    # The resume run failed too: no second resume, the order is left to the reconciler.
    again = record_run_failure(store, run, "boom again", may_resume=False)
    assert again.failed == [ids["dead with an order in flight"]] and again.resumable == []
    with session_scope(store) as session:
        row = session.get(StrategyExecution, ids["dead with an order in flight"])
        assert row.status == "FAILED" and "1 order(s) left for the reconciler" in row.error


def test_a_sharded_execution_whose_shard_died_before_sending_is_resumed_once_then_closed_with_its_shards(
    store,
):
    """Shard 0 completed, shard 1's worker died before it sent anything: its subscribers never got the
    signal, so the candle is resumed (the resume serves shard 1 only); if that resume fails too, the
    execution and the dead shard row are closed FAILED together, the completed shard untouched."""
    strategy_id, sub_id = _seed(store)
    dead = _dead_worker()
    execution_id = _execution(store, strategy_id, sub_id, "run-s", dead, 1)
    with session_scope(store) as session:
        for shard, status in ((0, "COMPLETED"), (1, "RUNNING")):
            session.add(ExecutionShard(execution_id=execution_id, shard=shard, shards=2, status=status,
                                       worker_id=dead, dagster_run_id="run-s", subscribers_count=0))  # fmt: skip
    outcome = record_run_failure(store, "run-s", "step killed", may_resume=True)
    assert outcome.resumable == [execution_id] and outcome.failed == []
    with session_scope(store) as session:
        assert "1 of 2 shard(s) unfinished: resuming" in session.get(StrategyExecution, execution_id).error

    again = record_run_failure(store, "run-s", "killed again", may_resume=False)
    assert again.failed == [execution_id]
    with session_scope(store) as session:
        shards = {r.shard: r.status for r in session.scalars(sa.select(ExecutionShard))}
        assert session.get(StrategyExecution, execution_id).status == "FAILED"
    assert shards == {0: "COMPLETED", 1: "FAILED"}
