"""Sharded fan-out on real Postgres + Redis + the simulator, shards in separate processes: the same
orders and trades as one process, every account in exactly one shard, a killed shard re-run and a
shard fired twice at once never duplicate an order, and the execution completes only with its last
shard."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.fixtures.live import START, build_world
from xcoin_trading.errors import ValidationError
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.live.registry import registry_for
from xcoin_trading.live.shards import parse_shard, run_candle_shard, shard_of
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import ExecutionShard, Order, StrategyExecution, Subscription, Trade

CLOSE = START + timedelta(hours=1)
UNRESOLVED = ("INTENT", "SENDING", "UNKNOWN")


def _shard_cmd(world, at, shard: str) -> list[str]:
    return [*world.tick_cmd(at), "--now", (at + timedelta(seconds=1)).isoformat(), "--shard", shard]


def _run_shards(world, at, shards: list[str], **env: str) -> list[str]:
    """Every `K/N` of `shards` in its own `xcoin live tick` process, all started at once."""
    procs = [subprocess.Popen(_shard_cmd(world, at, s), env=world.env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s in shards]  # fmt: skip
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return outputs


def _book(settings) -> dict:
    """What a user would see: every order and trade, by client id and subscription (ids of a fresh
    store are the same in two fresh stores seeded alike)."""
    with session_scope(settings) as session:
        rows = session.execute(
            sa.select(Order.client_order_id, Trade.execution_id, Order.leg, Order.side, Order.order_type,
                      Order.quantity, Order.price, Order.status, Order.filled_quantity, Order.avg_price, Order.fee)
            .join(Trade, Trade.id == Order.trade_id)
        ).all()  # fmt: skip
        # An exit's client id names the trade it closes; trade ids follow insert order, which shards
        # interleave: the trade is named by its execution instead (one trade per subscription each).
        orders = sorted((cid.rsplit("X", 1)[0] + f"X@{opened}" if leg == "EXIT" else cid, *rest)
                        for cid, opened, leg, *rest in rows)  # fmt: skip
        trades = session.execute(
            sa.select(Trade.subscription_id, Trade.execution_id, Trade.side, Trade.quantity, Trade.entry_price,
                      Trade.exit_price, Trade.stop_loss, Trade.take_profit, Trade.status, Trade.pnl)
            .order_by(Trade.subscription_id, Trade.execution_id)
        ).all()  # fmt: skip
        executions = session.execute(
            sa.select(StrategyExecution.interval_key, StrategyExecution.status, StrategyExecution.signal,
                      StrategyExecution.subscribers_count, StrategyExecution.trades_created)
            .order_by(StrategyExecution.interval_key)
        ).all()  # fmt: skip
    return {"orders": [tuple(o) for o in orders], "trades": [tuple(t) for t in trades],
            "executions": [tuple(e) for e in executions]}  # fmt: skip


def _second_store(request, monkeypatch, world):
    """A second fresh Postgres store with the same subscribers' shape on the same simulator."""
    from xcoin_trading.config import get_settings, reset_settings

    server = request.getfixturevalue("postgres_server_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    request.addfinalizer(lambda: _drop(server, name))
    monkeypatch.setenv("XCOIN_DATABASE_URL", f"{server.rpartition('/')[0]}/{name}")
    reset_settings()
    return build_world(get_settings(), world.sim, len(world.keys))


def _drop(server: str, name: str) -> None:
    from xcoin_trading.store.db import dispose_engines

    dispose_engines()
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _entries_per_account(world) -> Counter:
    return Counter({sub: len(world.fills(sub, "buy")) for sub in world.keys})


def test_two_shards_place_exactly_the_orders_and_trades_one_process_places(
    live_world_factory, request, monkeypatch
):
    one = live_world_factory(9, servers=True)
    two = _second_store(request, monkeypatch, one)
    assert list(one.keys) == list(two.keys)  # same ids in both fresh stores: same client order ids
    for i, action in enumerate(("LONG", "EXIT", "LONG")):
        close = CLOSE + timedelta(minutes=i)
        one.admin.advance(to_ms=int(close.timestamp() * 1000))
        for world in (one, two):
            world.set_action(action)
            registry_for(world.settings).invalidate()  # set_action invalidates the env's store only
        [report] = run_candle_close(live_context(one.settings), "BTCUSDT", "1m", close,
                                    now=close + timedelta(seconds=1))  # fmt: skip
        assert report.status == "COMPLETED"
        _run_shards(two, close, ["0/2", "1/2"])
    a, b = _book(one.settings), _book(two.settings)
    assert len(a["orders"]) == 9 * 2 + 9 + 9 * 2  # entry + TP, exit (its TP cancelled), entry + TP
    assert a["orders"] == b["orders"]
    assert a["trades"] == b["trades"]
    assert a["executions"] == b["executions"]
    assert {e[1] for e in b["executions"]} == {"COMPLETED"}
    assert sum(1 for t in b["trades"] if t[-2] == "CLOSED" and t[-1] is not None) == 9  # the EXIT's P&L


def test_every_account_is_in_exactly_one_shard_and_the_last_shard_completes_the_execution(live_world_factory):
    world = live_world_factory(7, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    ctx = live_context(world.settings)
    with session_scope(world.settings) as session:
        owner = dict(session.execute(sa.select(Subscription.id, Subscription.user_id)).all())
    seen: dict[int, int] = {}
    for k in range(3):  # one after the other: the execution stays RUNNING until the third
        [report] = run_candle_shard(ctx, "BTCUSDT", "1m", CLOSE, k, 3, now=CLOSE + timedelta(seconds=1))
        assert report.status == "COMPLETED"
        assert report.execution_status == ("COMPLETED" if k == 2 else "RUNNING")
        for sub_id in report.outcomes:
            assert sub_id not in seen, f"subscription {sub_id} in shards {seen[sub_id]} and {k}"
            assert shard_of(owner[sub_id], 3) == k
            seen[sub_id] = k
    assert set(seen) == set(world.keys)
    assert len(set(seen.values())) > 1  # 7 users really spread over the shards
    with session_scope(world.settings) as session:
        [execution] = session.scalars(sa.select(StrategyExecution)).all()
        shards = session.scalars(sa.select(ExecutionShard).order_by(ExecutionShard.shard)).all()
        assert [(s.shard, s.shards, s.status) for s in shards] == [(k, 3, "COMPLETED") for k in range(3)]
        assert execution.status == "COMPLETED" and execution.trades_created == 7
        assert execution.subscribers_count == 7
        assert set(execution.details["outcomes"]) == {str(s) for s in world.keys}
    assert _entries_per_account(world) == Counter({sub: 1 for sub in world.keys})
    # A fourth run of any shard changes nothing.
    [again] = run_candle_shard(ctx, "BTCUSDT", "1m", CLOSE, 1, 3, now=CLOSE + timedelta(seconds=1))
    assert again.status in ("ALREADY_DONE", "LOCKED")
    assert _entries_per_account(world) == Counter({sub: 1 for sub in world.keys})


def test_a_shard_killed_mid_fan_out_and_run_again_leaves_one_entry_per_account(live_world_factory):
    world = live_world_factory(12, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    world.admin.set_faults(latency_ms=250, endpoints=["orders/create"])
    with session_scope(world.settings) as session:
        owner = dict(session.execute(sa.select(Subscription.id, Subscription.user_id)).all())
    mine = [s for s in world.keys if shard_of(owner[s], 2) == 0]
    proc = subprocess.Popen(_shard_cmd(world, CLOSE, "0/2"), env=world.env(XCOIN_FANOUT_CONCURRENCY="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    filled_at_kill = world.kill_once_filled(proc, "buy", at_least=2)
    assert 2 <= filled_at_kill < len(mine), "the kill must land mid fan-out of shard 0"
    world.admin.clear_faults()
    with session_scope(world.settings) as session:
        [shard0] = session.scalars(sa.select(ExecutionShard)).all()
        assert (shard0.shard, shard0.status) == (0, "RUNNING")
        assert session.scalar(
            sa.select(sa.func.count()).select_from(Order).where(Order.status.in_(UNRESOLVED))
        )
    _run_shards(world, CLOSE, ["1/2"])  # the other shard reuses the dead one's signal
    with session_scope(world.settings) as session:
        assert session.scalar(sa.select(StrategyExecution.status)) == "RUNNING"  # shard 0 is not done
    _run_shards(world, CLOSE, ["0/2"])  # the re-run resolves shard 0's intents by client id
    with session_scope(world.settings) as session:
        execution = session.scalar(sa.select(StrategyExecution))
        assert execution.status == "COMPLETED" and execution.trades_created == 12
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(Order).where(Order.status.in_(UNRESOLVED)))
            == 0
        )
        entries = session.scalars(sa.select(Order).where(Order.leg == "ENTRY")).all()
        assert sorted(o.subscription_id for o in entries) == sorted(world.keys)
        assert all(o.status == "FILLED" and o.exchange_order_id for o in entries)
    assert _entries_per_account(world) == Counter({sub: 1 for sub in world.keys})


class _AlwaysGranted:
    """Locks that never refuse (Redis flushed, a lock expired): only the store's claims remain."""

    def acquire(self, key: str, holder: str, ttl_seconds: int) -> bool:
        return True

    def holder(self, key: str) -> str | None:
        return None

    def release(self, key: str, holder: str) -> None:
        pass


def test_the_same_shard_fired_twice_at_once_places_each_order_once(live_world_factory):
    world = live_world_factory(10, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    world.admin.set_faults(latency_ms=100, endpoints=["orders/create"])
    # Two processes (Redis locks in play), then threads of one process without any lock: the rows decide.
    outputs = _run_shards(world, CLOSE, ["0/2", "0/2"])
    statuses = sorted(
        line.split(": ")[1].split()[0] for out in outputs for line in out.splitlines() if "_1m:" in line
    )
    assert statuses.count("COMPLETED") == 1, outputs
    barrier = threading.Barrier(3)
    reports = []

    def fire():
        ctx = dataclasses.replace(live_context(world.settings), locks=_AlwaysGranted())
        barrier.wait()
        reports.extend(run_candle_shard(ctx, "BTCUSDT", "1m", CLOSE, 1, 2, now=CLOSE + timedelta(seconds=1)))

    threads = [threading.Thread(target=fire) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    world.admin.clear_faults()
    assert sorted(r.status for r in reports).count("COMPLETED") == 1, reports
    assert {r.status for r in reports} - {"COMPLETED"} <= {"IN_PROGRESS", "ALREADY_DONE"}
    with session_scope(world.settings) as session:
        assert session.scalar(sa.select(StrategyExecution.status)) == "COMPLETED"
        cids = session.scalars(sa.select(Order.client_order_id)).all()
        assert len(cids) == len(set(cids)) == 2 * len(world.keys)  # entry + take profit each
        assert session.scalar(sa.select(sa.func.count()).select_from(ExecutionShard)) == 2
    assert _entries_per_account(world) == Counter({sub: 1 for sub in world.keys})


@pytest.mark.parametrize("value", ["2/2", "x/2", "1", "-1/2", "1/0", ""])
def test_a_bad_shard_is_refused_naming_the_option(value):
    with pytest.raises(ValidationError, match="--shard"):
        parse_shard("--shard", value)


def test_the_sharded_dagster_job_runs_each_shard_in_its_own_process(live_world_factory, tmp_path):
    """The code location with XCOIN_FANOUT_SHARDS=2: the live job's shards are separate steps of the
    multiprocess executor; the run config is the single-process job's."""
    import json
    import sys
    from pathlib import Path

    from xcoin_pipelines.defs.live.jobs import candle_run_config

    world = live_world_factory(6, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    iso = "%Y-%m-%dT%H:%M:%SZ"
    config = candle_run_config(
        "BTCUSDT", "1m", CLOSE.strftime(iso), (CLOSE + timedelta(seconds=1)).strftime(iso)
    )
    root = Path(__file__).resolve().parents[1]
    config_file = tmp_path / "run.json"  # JSON is YAML
    config_file.write_text(json.dumps(config))
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "xcoin_pipelines.definitions",
         "-j", "live_execution_job", "-c", str(config_file)],
        cwd=root, env=world.env(XCOIN_FANOUT_SHARDS="2", DAGSTER_HOME=str(tmp_path)), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "live_candle_shard[shard_1]" in run.stdout + run.stderr
    with session_scope(world.settings) as session:
        execution = session.scalar(sa.select(StrategyExecution))
        assert execution.status == "COMPLETED" and execution.trades_created == 6
        shards = session.scalars(sa.select(ExecutionShard).order_by(ExecutionShard.shard)).all()
        assert [(s.shard, s.status) for s in shards] == [(0, "COMPLETED"), (1, "COMPLETED")]
        pids = {s.worker_id.split(":")[1] for s in shards}
        assert len(pids) == 2  # two processes
        assert {s.dagster_run_id for s in shards} == {execution.dagster_run_id}
    assert _entries_per_account(world) == Counter({sub: 1 for sub in world.keys})


def test_a_shard_that_fails_on_a_bug_fails_the_execution_and_the_other_shard_places_nothing(
    live_world_factory, monkeypatch
):
    from xcoin_trading.live import fanout

    world = live_world_factory(4, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    ctx = live_context(world.settings)
    original = fanout.fan_out

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the fan-out")

    monkeypatch.setattr(fanout, "fan_out", broken)
    [first] = run_candle_shard(ctx, "BTCUSDT", "1m", CLOSE, 0, 2, now=CLOSE + timedelta(seconds=1))
    monkeypatch.setattr(fanout, "fan_out", original)
    assert (first.status, first.execution_status) == ("FAILED", "FAILED")
    assert "a bug in the fan-out" in first.error
    [second] = run_candle_shard(ctx, "BTCUSDT", "1m", CLOSE, 1, 2, now=CLOSE + timedelta(seconds=1))
    assert second.status == "FAILED"  # the candle failed as a whole, as one process's would
    with session_scope(world.settings) as session:
        execution = session.scalar(sa.select(StrategyExecution))
        assert execution.status == "FAILED" and "shard 0/2" in execution.error
        assert session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0
        assert session.scalar(sa.select(ExecutionShard.status)) == "FAILED"


def test_each_strategy_runs_in_its_preferred_shard_and_another_takes_over_only_when_it_is_missing(
    live_world_factory, monkeypatch
):
    """The strategy's preferred shard (id % N) runs it even when another shard starts first, so the
    strategies' CPU is spread and no sandbox starts twice; with the preferred shard down, the other
    runs it after CLAIM_GRACE and serves its own subscribers."""
    from xcoin_trading.live import coordinator, shards

    world = live_world_factory(4, servers=True)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    ran: list[str] = []
    execute = coordinator.execute

    def spy(*args, **kwargs):
        ran.append(threading.current_thread().name)
        return execute(*args, **kwargs)

    monkeypatch.setattr(coordinator, "execute", spy)
    preferred = shards.preferred_shard(world.strategy_id, 2)
    other = 1 - preferred

    def shard(k: int, close) -> None:
        run_candle_shard(
            live_context(world.settings), "BTCUSDT", "1m", close, k, 2, now=close + timedelta(seconds=1)
        )

    first = threading.Thread(target=shard, args=(other, CLOSE), name=f"shard-{other}")
    first.start()
    first.join(0.3)  # the other shard is already waiting when the preferred one starts
    second = threading.Thread(target=shard, args=(preferred, CLOSE), name=f"shard-{preferred}")
    second.start()
    for t in (first, second):
        t.join(120)
    assert ran == [f"shard-{preferred}"]
    with session_scope(world.settings) as session:
        assert session.scalar(sa.select(StrategyExecution.status)) == "COMPLETED"

    later = CLOSE + timedelta(minutes=1)
    world.admin.advance(to_ms=int(later.timestamp() * 1000))
    ran.clear()
    alone = threading.Thread(target=shard, args=(other, later), name=f"shard-{other}")
    alone.start()
    alone.join(120)
    assert ran == [f"shard-{other}"]  # it waited CLAIM_GRACE, then ran the strategy itself
    with session_scope(world.settings) as session:
        execution = session.scalar(
            sa.select(StrategyExecution).where(StrategyExecution.scheduled_at == later)
        )
        done = session.scalars(
            sa.select(ExecutionShard.shard).where(ExecutionShard.execution_id == execution.id)
        )
        assert execution.signal is not None and list(done) == [other]
