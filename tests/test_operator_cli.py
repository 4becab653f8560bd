"""The operator's view from the command line: list/show of users, strategies, subscriptions, positions,
orders and executions (table and --json, never a secret), and `live pause|resume --all|--strategy`
honoured by the next candle."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.fixtures.live import START
from xcoin_trading.cli import main
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, Strategy, Subscription, Trade

CLOSE = START + timedelta(hours=1)


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _json(*args: str):
    out = _run(*args, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def _tick(world, close):
    world.admin.advance(to_ms=int(close.timestamp() * 1000))
    return run_candle_close(live_context(world.settings), "BTCUSDT", "1m", close, now=close)


@pytest.fixture()
def traded(live_world_factory):
    world = live_world_factory(3)
    [report] = _tick(world, CLOSE)
    assert report.trades_created == 3
    with session_scope(world.settings) as session:
        world.code = session.get(Strategy, world.strategy_id).code
    return world


def test_lists_and_shows_match_the_store_and_leak_no_secret(traded):
    world = traded
    with session_scope(world.settings) as session:
        trades = session.scalars(sa.select(Trade).order_by(Trade.id.desc())).all()
        orders = session.scalars(sa.select(Order).order_by(Order.id.desc())).all()
        subs = session.scalars(sa.select(Subscription).order_by(Subscription.id.desc())).all()
        emails = [s.user.email for s in subs]
    positions = _json("positions", "list")
    assert [p["id"] for p in positions] == [t.id for t in trades]
    assert [p["quantity"] for p in positions] == [format(t.quantity, "f") for t in trades]  # exact strings
    assert [o["client_order_id"] for o in _json("orders", "list")] == [o.client_order_id for o in orders]
    listed = _json("subscriptions", "list", "--strategy", world.code)
    assert [(s["user"], s["state"]) for s in listed] == [(e, "active") for e in emails]
    [execution] = _json("executions", "list", "--strategy", world.code)
    assert (execution["status"], execution["signal"], execution["trades"]) == ("COMPLETED", "LONG", 3)
    users = _json("users", "list")
    assert {u["email"] for u in users} >= set(emails)
    dump = json.dumps([users, _json("strategies", "show", world.code), _json("users", "show", emails[0])])
    assert "password-123" not in dump and "$argon2" not in dump  # neither the password nor its hash
    assert "def signals" not in dump and '"source"' not in dump  # nor the author's code
    for creds in world.keys.values():
        assert creds.api_secret not in dump and creds.api_key not in dump
    # show: a position with its orders; an order by client id; the table form
    shown = _json("positions", "show", str(trades[0].id))
    assert {o["leg"] for o in shown["orders"]} == {"ENTRY", "TAKE_PROFIT"}
    assert _json("orders", "show", orders[0].client_order_id)["id"] == orders[0].id
    table = _run("positions", "list", "--user", emails[0])
    assert table.exit_code == 0
    header, *lines = table.output.splitlines()
    assert header.split()[:4] == ["id", "subscription_id", "symbol", "side"] and len(lines) == 1
    assert lines[0].split()[:5] == [str(trades[0].id), str(subs[0].id), "BTCUSDT", "LONG", "OPEN"]


def test_unknown_ids_and_bad_filters_exit_2(traded):
    assert _run("positions", "show", "999999").exit_code == 2
    assert "strategy nope not found" in _run("orders", "list", "--strategy", "nope").output
    assert _run("subscriptions", "list", "--status", "sleeping").exit_code == 2
    assert _run("users", "list", "--limit", "0").exit_code == 2


def test_pause_all_stops_the_next_candle_and_resume_lets_it_trade(traded):
    world = traded
    paused = _run("live", "pause", "--all")
    assert paused.exit_code == 0 and "paused 3 subscription(s)" in paused.output
    assert {s["state"] for s in _json("subscriptions", "list")} == {"paused"}
    world.set_action("EXIT")
    [report] = _tick(world, CLOSE + timedelta(minutes=2))
    assert report.subscribers == 0  # nobody acted on the EXIT
    assert len(_json("positions", "list")) == 3
    assert "paused 0 subscription(s)" in _run("live", "pause", "--all").output  # idempotent
    resumed = _run("live", "resume", "--strategy", world.code)
    assert resumed.exit_code == 0 and "resumed 3 subscription(s)" in resumed.output
    [report] = _tick(world, CLOSE + timedelta(minutes=3))
    assert report.subscribers == 3 and _json("positions", "list") == []


def test_pause_one_strategy_leaves_the_others(traded, live_world_factory):
    other = live_world_factory(1)
    out = _run("live", "pause", "--strategy", traded.code)
    assert out.exit_code == 0 and "paused 3 subscription(s)" in out.output
    states = {s["strategy"]: s["state"] for s in _json("subscriptions", "list")}
    with session_scope(other.settings) as session:
        other_code = session.get(Strategy, other.strategy_id).code
    assert states[traded.code] == "paused" and states[other_code] == "active"


def test_pause_needs_exactly_one_scope(traded):
    assert _run("live", "pause").exit_code == 2
    assert _run("live", "pause", "--all", "--strategy", traded.code).exit_code == 2
    assert _run("live", "pause", "--strategy", "nope").exit_code == 2
