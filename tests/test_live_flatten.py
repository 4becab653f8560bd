"""`xcoin live flatten` is resumable and exact (issue 20): SIGKILLed at random points (spot and
futures, with faults on the exit and cancel calls), run again → every position flat on the exchange,
every trade CLOSED with P&L == the ledger, no execution left RUNNING; PENDING trades and positions
the store lacks are closed too; the result says per subscriber what happened.

Before issue 20: each run was a new execution keyed by the wall-clock second (the killed one stayed
RUNNING for ever), PENDING trades were skipped, and the CLI always exited 0."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_live_healing import (
    CLOSE,
    PAIR,
    _assert_pnl_is_ledger,
    _enter,
    _flatten,
    _lost_futures_entries,
    _positions,
    _rows,
)
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, Strategy, StrategyExecution, Trade


def _code(world) -> str:
    with session_scope(world.settings) as session:
        return session.get(Strategy, world.strategy_id).code


def _flatten_cmd(world, *args: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "xcoin"),
        "live",
        "flatten",
        *(args or ("--strategy", _code(world))),
    ]


def _spot_holdings(world, sub_id) -> Decimal:
    b = world.admin.balances(world.keys[sub_id].api_key).get("BTC") or {"balance": "0", "locked_balance": "0"}
    return Decimal(b["balance"]) + Decimal(b.get("locked_balance") or 0)


def _assert_flat_and_exact(world, futures: bool) -> None:
    for sub in world.keys:
        if futures:
            assert _positions(world, sub) == {}, sub
        else:
            assert _spot_holdings(world, sub) == 0, sub
    _assert_pnl_is_ledger(world)
    with session_scope(world.settings) as session:
        running = session.scalars(
            sa.select(StrategyExecution).where(StrategyExecution.status == "RUNNING")
        ).all()
        unresolved = session.scalars(
            sa.select(Order).where(Order.status.in_(("INTENT", "SENDING", "UNKNOWN", "OPEN")))
        ).all()
    assert running == [], [(r.id, r.interval_key) for r in running]
    assert unresolved == [], [(o.client_order_id, o.status) for o in unresolved]


@pytest.mark.parametrize("market", ["spot", "futures"])
def test_a_flatten_killed_at_random_points_then_run_again_closes_everything_exactly(
    live_world_factory, market
):
    seed = int(os.environ.get("XCOIN_FLATTEN_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"flatten kill seed: {seed} (replay with XCOIN_FLATTEN_SEED={seed})")
    rng = random.Random(seed)
    futures = market == "futures"
    world = live_world_factory(6, servers=True, symbol=PAIR if futures else "BTCUSDT")
    _enter(world, symbol=PAIR if futures else "BTCUSDT", sl="0.3", tp="0.3")
    assert {t.status for t in _rows(world, Trade)} == {"OPEN"}
    world.admin.advance(to_ms=int((CLOSE + timedelta(minutes=1)).timestamp() * 1000))
    # Faults on the calls a flatten makes that change something: exits (create) and cancels.
    world.admin.set_faults(
        {"lost_reply": 0.3, "endpoints": ["orders/create"]},
        {"error_5xx": 0.3, "endpoints": ["orders/cancel"]},
        seed=seed,
    )
    for _ in range(3):  # killed at a random moment, three times
        proc = subprocess.Popen(_flatten_cmd(world), env=world.env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(rng.uniform(0.3, 4.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    world.admin.clear_faults()
    done = subprocess.run(_flatten_cmd(world), env=world.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT_CLOSED" not in done.stdout
    _assert_flat_and_exact(world, futures)
    with session_scope(world.settings) as session:
        flattens = session.scalars(
            sa.select(StrategyExecution).where(StrategyExecution.interval_key.like("%flatten"))
        ).all()
    assert flattens and all(f.interval_key != "running_flatten" for f in flattens)


def test_a_rerun_takes_the_dead_flatten_over_instead_of_starting_another(live_world_factory, monkeypatch):
    """The dead run's execution is resumed (same row, same client ids), not left RUNNING beside a new one."""
    import socket

    from xcoin_trading.live import coordinator, fanout, flatten

    world = live_world_factory(3)
    _enter(world, sl="0.3", tp="0.3")
    send_all = fanout.send_all

    async def half_then_die(api_url, public_url, vault, jobs, *args, **kwargs):
        await send_all(api_url, public_url, vault, jobs[:1], *args, **kwargs)
        raise KeyboardInterrupt  # stands for a SIGKILL: nothing in the coordinator catches it

    monkeypatch.setattr(fanout, "send_all", half_then_die)
    dead = coordinator.live_context(world.settings, worker_id=f"{socket.gethostname()}:999999999:dead")
    strategy = _strategy(world)
    with pytest.raises(KeyboardInterrupt):
        flatten.flatten(dead, strategy)
    monkeypatch.setattr(fanout, "send_all", send_all)
    [running] = _rows(world, StrategyExecution, StrategyExecution.status == "RUNNING")
    report = _flatten(world)
    assert report.execution_id == running.id and report.status == "COMPLETED"
    assert sorted(o["status"] for o in report.outcomes.values()) == ["CLOSED"] * 3
    exits = _rows(world, Order, Order.leg == "EXIT")
    assert len(exits) == 3 and {o.execution_id for o in exits} == {running.id}  # one exit each, none twice
    _assert_flat_and_exact(world, futures=False)


def test_a_dead_flatten_nobody_reruns_is_closed_by_the_reconciler_once_its_orders_are_resolved(
    live_world_factory, monkeypatch
):
    import socket

    from xcoin_trading.live import coordinator, fanout, flatten
    from xcoin_trading.live.reconcile import LOST_AFTER, reconcile_once

    world = live_world_factory(3)
    _enter(world, sl="0.3", tp="0.3")
    send_all = fanout.send_all

    async def one_then_die(api_url, public_url, vault, jobs, *args, **kwargs):
        await send_all(api_url, public_url, vault, jobs[:1], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(fanout, "send_all", one_then_die)
    dead = coordinator.live_context(world.settings, worker_id=f"{socket.gethostname()}:999999999:dead")
    with pytest.raises(KeyboardInterrupt):
        flatten.flatten(dead, _strategy(world))
    monkeypatch.setattr(fanout, "send_all", send_all)
    for _ in range(LOST_AFTER):
        reconcile_once(coordinator.live_context(world.settings))
    [row] = _rows(world, StrategyExecution, StrategyExecution.interval_key.like("%flatten"))
    assert (
        row.status == "FAILED"
        and row.interval_key.endswith(f"_{row.id}_flatten")
        and "run the flatten" in row.error
    )
    statuses = sorted(o.status for o in _rows(world, Order, Order.leg == "EXIT"))
    assert statuses == ["FILLED", "LOST", "LOST"]  # the one sent closed its trade; the others never left
    assert sorted(t.status for t in _rows(world, Trade)) == ["CLOSED", "OPEN", "OPEN"]
    report = _flatten(world)  # and a new flatten closes the rest
    assert sorted(o["status"] for o in report.outcomes.values()) == ["ALREADY_FLAT", "CLOSED", "CLOSED"]
    _assert_flat_and_exact(world, futures=False)


def _strategy(world):
    from xcoin_trading.live.registry import StrategySettings

    with session_scope(world.settings) as session:
        return StrategySettings.from_row(session.get(Strategy, world.strategy_id))


def test_flatten_closes_pending_trades_and_reports_each_subscriber(live_world_factory):
    """PENDING trades (entry outcome unknown) are asked about and closed; a subscriber with nothing
    open is ALREADY_FLAT; one whose exit cannot be confirmed is NOT_CLOSED with the reason."""
    world = live_world_factory(2, symbol=PAIR)
    _lost_futures_entries(world, 2)  # both trades PENDING, their positions real
    report = _flatten(world)
    assert [o["status"] for _, o in sorted(report.outcomes.items())] == ["CLOSED", "CLOSED"]
    assert report.error is None
    assert all(_positions(world, sub) == {} for sub in world.keys)
    _assert_pnl_is_ledger(world)
    again = _flatten(world)
    assert [o["status"] for _, o in sorted(again.outcomes.items())] == ["ALREADY_FLAT", "ALREADY_FLAT"]


def test_a_subscriber_that_cannot_be_closed_is_named_with_the_reason_and_the_cli_exits_1(live_world_factory):
    world = live_world_factory(2, servers=True)
    _enter(world, sl="0.3", tp="0.3")
    first = min(world.keys)
    world.admin.set_faults(error_5xx=1, endpoints=["orders/status", "orders/cancel", "orders/create"])
    done = subprocess.run(_flatten_cmd(world), env=world.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"subscription {first}: NOT_CLOSED (" in done.stdout
    world.admin.clear_faults()
    done = subprocess.run(
        _flatten_cmd(world, "--all"), env=world.env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_flat_and_exact(world, futures=False)


def test_flatten_names_a_bad_choice_of_options(live_world_factory):
    world = live_world_factory(1, servers=True)
    done = subprocess.run(_flatten_cmd(world, "--all", "--strategy", _code(world)), env=world.env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "--strategy" in done.stdout + done.stderr
