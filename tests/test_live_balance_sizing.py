"""Entries are bounded by what the account really holds: each candle asks every subscriber's account for
its free balance once, and two subscriptions of one account (two strategies, running at once on one
candle) never together spend more than it holds. What does not fit is shrunk, or refused with the
reason, before anything reaches the exchange."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.fixtures.live import CONSTANT_SIGNAL, START
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.services import strategies, subscriptions
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, StrategyExecution, Subscription, Trade

CLOSE = START + timedelta(hours=1)


def _second_strategy_for_the_same_account(world) -> int:
    """Another strategy on the same candle, and the first subscriber's account subscribed to it too."""
    with session_scope(world.settings) as session:
        first = session.scalars(sa.select(Subscription)).first()
        other = strategies.create_strategy(
            session, first.user_id, name="twin", code=f"twin-{world.strategy_id}", symbol="BTCUSDT",
            resolution="1m", source=CONSTANT_SIGNAL, lookback=30, is_public=False,
        )  # fmt: skip
        other.validation_status = "VALID"
        # All-in sizing (risk 100 %, capped by capital): each subscription alone would spend ~1000 USDT.
        subscriptions.subscribe(session, first.user_id, other.id, capital=Decimal(1000), risk_per_trade="1")
        first.risk_per_trade = Decimal(1)
        return first.user_id


@pytest.mark.parametrize("servers", [False, True], ids=["sqlite", "postgres_redis"])
def test_two_subscriptions_of_one_account_never_spend_more_than_it_holds(live_world_factory, servers):
    world = live_world_factory(1, servers=servers, balances={"USDT": "1500"})
    _second_strategy_for_the_same_account(world)
    [sub_key] = world.keys.values()
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    reports = run_candle_close(
        live_context(world.settings), "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=2)
    )
    assert sorted(r.status for r in reports) == ["COMPLETED", "COMPLETED"], [r.error for r in reports]

    with session_scope(world.settings) as session:
        orders = session.scalars(sa.select(Order).where(Order.leg == "ENTRY")).all()
        trades = session.scalars(sa.select(Trade)).all()
        executions = session.scalars(sa.select(StrategyExecution)).all()
        session.expunge_all()
    # Nothing was refused by the exchange: every entry sent was filled.
    assert [o.status for o in orders] == ["FILLED"] * len(orders), [(o.status, o.error) for o in orders]
    spent = sum((t.entry_price * t.quantity + t.entry_fee for t in trades), Decimal(0))
    assert spent <= Decimal(1500)
    # The exchange agrees: the account never went below zero and holds what was bought.
    balances = world.admin.balances(sub_key.api_key)
    assert Decimal(balances["USDT"]["balance"]) >= 0
    assert Decimal(balances["USDT"]["balance"]) + spent == Decimal(1500)
    # One entry got the capital it asked for; the other one was cut to what was left, and says so.
    outcomes = [o for e in executions for o in (e.details or {}).get("outcomes", {}).values()]
    assert len(trades) + sum(o["status"] == "REFUSED" for o in outcomes) == 2
    said = [o.get("balance") or o.get("reason") or "" for o in outcomes]
    assert any("free on the account" in s for s in said), outcomes


def test_an_account_that_holds_too_little_for_the_minimum_is_refused_with_the_reason(live_world_factory):
    world = live_world_factory(1, balances={"USDT": "3"})  # below BTCUSDT's minimum order value
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    [report] = run_candle_close(
        live_context(world.settings), "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=2)
    )
    assert report.status == "COMPLETED" and report.trades_created == 0
    [outcome] = report.outcomes.values()
    assert outcome["status"] == "REFUSED" and "insufficient balance: 3 USDT free" in outcome["reason"]
    with session_scope(world.settings) as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0
        )  # nothing reached the exchange


def test_subscribe_warns_when_an_accounts_subscriptions_commit_more_than_it_holds(
    simulator, monkeypatch, master_key_env
):
    from click.testing import CliRunner

    from xcoin_trading.cli import main
    from xcoin_trading.config import reset_settings
    from xcoin_trading.exchange.simulator import SimulatorAdmin

    monkeypatch.setenv("COINDCX_API_URL", simulator.url)
    monkeypatch.setenv("COINDCX_PUBLIC_URL", simulator.url)
    reset_settings()
    SimulatorAdmin(simulator.url).add_account("warn-key-123456", "warn-secret", {"USDT": "1500"})

    def run(*args: str):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result

    run("db", "upgrade")
    run("users", "create", "--email", "w@x.io", "--password", "long-password")
    run("broker", "add", "--user", "w@x.io", "--api-key", "warn-key-123456", "--api-secret", "warn-secret")
    for code in ("w-one", "w-two"):
        run("strategies", "add", "--builtin", "sma_crossover", "--user", "w@x.io", "--code", code,
            "--symbol", "BTCUSDT", "--resolution", "1m")  # fmt: skip
    first = run("subscribe", "--user", "w@x.io", "--strategy", "w-one", "--capital", "1000", "--risk", "0.01")
    assert "warning" not in first.output  # 1000 of 1500: fits
    second = run(
        "subscribe", "--user", "w@x.io", "--strategy", "w-two", "--capital", "1000", "--risk", "0.01"
    )
    assert "commit 2000 USDT but it holds 1500" in second.output, second.output


def test_balances_read_before_the_close_are_used_once_and_a_second_strategy_reads_after_the_first(
    live_world_factory, monkeypatch
):
    """A run launched ahead of its candle reads its accounts' balances while it waits: at the close the
    first strategy sizes on that read (no balance call), the second strategy on the same account asks
    the exchange again (after the first one's orders), and together they still fit what it holds."""
    from xcoin_trading.live import coordinator, fanout
    from xcoin_trading.live.coordinator import prepare_candle

    world = live_world_factory(1, servers=True, balances={"USDT": "1500"})
    _second_strategy_for_the_same_account(world)
    [sub_key] = world.keys.values()
    read_at_close: list[int] = []
    real = fanout.free_balances

    async def counted(*args, **kwargs):
        read_at_close.append(len(args[3]))  # the accounts asked at the close
        return await real(*args, **kwargs)

    monkeypatch.setattr(coordinator.fanout, "free_balances", counted)
    ctx = live_context(world.settings)
    prepare_candle(ctx, "BTCUSDT", "1m")
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    reports = run_candle_close(ctx, "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=2))
    assert sorted(r.status for r in reports) == ["COMPLETED", "COMPLETED"], [r.error for r in reports]
    assert read_at_close == [1]  # one strategy used the read ahead; the other asked once, after it
    with session_scope(world.settings) as session:
        ahead = [
            (e.details or {}).get("balances_read_ahead")
            for e in session.scalars(sa.select(StrategyExecution))
        ]
        trades = session.scalars(sa.select(Trade)).all()
        entries = session.scalars(sa.select(Order).where(Order.leg == "ENTRY")).all()
        session.expunge_all()
    assert sorted(ahead) == [0, 1]
    assert [o.status for o in entries] == ["FILLED"] * len(entries)
    spent = sum((t.entry_price * t.quantity + t.entry_fee for t in trades), Decimal(0))
    assert Decimal(world.admin.balances(sub_key.api_key)["USDT"]["balance"]) + spent == Decimal(1500)


def test_a_balance_read_too_long_before_the_close_is_not_trusted():
    import time

    from xcoin_trading.live.balances import MAX_AGE, ReadAhead

    ahead = ReadAhead()
    ahead.put("USDT", {1: Decimal(100)}, at=time.monotonic() - MAX_AGE - 1)
    ahead.put("USDT", {2: Decimal(200)})
    ahead.put("INR", {3: Decimal(300)})
    assert ahead.take([1, 2, 3], "USDT") == {2: Decimal(200)}  # 1 too old, 3 another currency
    assert ahead.take([2], "USDT") == {}  # used once: its orders changed it


def test_keys_decrypted_for_the_balances_read_ahead_serve_the_close(live_world_factory, monkeypatch):
    """The read ahead decrypts every account's keys before the close; the close's fan-out signs its
    orders with those (no decryption on the candle's critical path) and every entry is accepted."""
    from xcoin_trading.live import dispatch
    from xcoin_trading.live.coordinator import prepare_candle

    world = live_world_factory(3, servers=True)
    ctx = live_context(world.settings)
    prepare_candle(ctx, "BTCUSDT", "1m")
    decrypted: list[int] = []
    real = dispatch.decrypt

    def counted(vault, credential):
        decrypted.append(credential.id)
        return real(vault, credential)

    monkeypatch.setattr(dispatch, "decrypt", counted)
    world.admin.advance(to_ms=int(CLOSE.timestamp() * 1000))
    [report] = run_candle_close(ctx, "BTCUSDT", "1m", CLOSE, now=CLOSE + timedelta(seconds=2))
    assert report.status == "COMPLETED", report.error
    assert decrypted == []
    with session_scope(world.settings) as session:
        entries = session.scalars(sa.select(Order).where(Order.leg == "ENTRY")).all()
        assert [o.status for o in entries] == ["FILLED"] * 3


def test_keys_decrypted_ahead_are_not_used_once_stale_or_once_the_ciphertext_changed(monkeypatch):
    import base64
    import os
    import time

    from xcoin_trading.live import dispatch
    from xcoin_trading.live.balances import MAX_AGE, ReadAhead
    from xcoin_trading.services.credentials import SealedKeys, _context
    from xcoin_trading.vault import Vault, parse_master_keys

    vault = Vault(parse_master_keys(base64.b64encode(os.urandom(32)).decode()))

    def sealed(key: str) -> SealedKeys:
        return SealedKeys(5, 9, "coindcx", vault.encrypt(key, _context(9, "coindcx", "api_key")),
                          vault.encrypt(f"{key}-secret", _context(9, "coindcx", "api_secret")))  # fmt: skip

    before = sealed("key-one")
    ahead = ReadAhead()
    ring = dispatch.KeyRing(vault)
    ring.credentials(before)
    ahead.put_keys(ring)
    decrypted: list[int] = []
    real = dispatch.decrypt
    monkeypatch.setattr(dispatch, "decrypt", lambda v, c: decrypted.append(c.id) or real(v, c))
    assert ahead.keyring(vault).credentials(before).api_key == "key-one" and decrypted == []
    rewritten = sealed("key-two")  # same account id, other ciphertext: what the ring holds is not used
    assert ahead.keyring(vault).credentials(rewritten).api_key == "key-two" and decrypted == [5]
    ahead.put_keys(ring, at=time.monotonic() - MAX_AGE - 1)
    assert ahead.keyring(vault).credentials(before).api_key == "key-one" and decrypted == [5, 5]
