"""The reconciler follows every order to its end: take profits, watched spot stops, exchange-side
futures TP/SL, lost and external orders — and a query that failed changes nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from tests.fixtures.live import START
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.live.reconcile import LOST_AFTER, reconcile_once
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, Subscription, Trade

CLOSE = START + timedelta(hours=1)


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def _trades(world):
    with session_scope(world.settings) as session:
        return list(session.scalars(sa.select(Trade).order_by(Trade.id)))


def _enter(world, **signal):
    return world.enter_at(CLOSE, **signal)


def _walk_until_closed(world, max_minutes=600):
    """Advance the exchange minute by minute, reconciling each minute, until every trade is closed."""
    world.reconcile_until(lambda: all(t.status == "CLOSED" for t in _trades(world)), CLOSE, max_minutes)


def test_spot_trades_close_at_their_take_profit_or_watched_stop_with_pnl_from_the_fills(live_world_factory):
    world = live_world_factory(3)
    _enter(world)
    _walk_until_closed(world)
    for trade in _trades(world):
        assert trade.exit_type in ("TAKE_PROFIT", "STOP_LOSS")
        [buy], [sell] = world.fills(trade.subscription_id, "buy"), world.fills(trade.subscription_id, "sell")
        assert trade.exit_price == sell.price and trade.exit_fee == sell.fee_amount
        assert trade.pnl == (sell.price - buy.price) * trade.quantity - buy.fee_amount - sell.fee_amount
        if trade.exit_type == "TAKE_PROFIT":
            assert sell.price == trade.take_profit  # a resting limit fills at its price
        else:
            assert sell.price <= trade.stop_loss  # sold at market once the stop was crossed
        with session_scope(world.settings) as session:
            orders = list(session.scalars(sa.select(Order).where(Order.trade_id == trade.id)))
            sub = session.get(Subscription, trade.subscription_id)
        assert all(o.status in ("FILLED", "CANCELLED") for o in orders), [(o.leg, o.status) for o in orders]
        assert (sub.total_trades, sub.total_pnl) == (1, trade.pnl)
        assert (sub.winning_trades, sub.losing_trades) == ((1, 0) if trade.pnl > 0 else (0, 1))
        balances = world.admin.balances(world.keys[trade.subscription_id].api_key)
        assert (
            Decimal(balances["USDT"]["balance"]) + Decimal(balances["USDT"].get("locked_balance", 0))
            == Decimal(10000) + trade.pnl
        )


def test_futures_trades_close_by_the_exchanges_own_tp_or_sl(live_world_factory):
    world = live_world_factory(2, symbol="B-BTC_USDT")
    _enter(world, symbol="B-BTC_USDT")
    _walk_until_closed(world)
    for trade in _trades(world):
        assert trade.exit_type in ("TAKE_PROFIT", "STOP_LOSS")
        # At the level, or better/worse by a gap (the candle opened beyond it and filled at its open).
        if trade.exit_type == "TAKE_PROFIT":
            assert trade.exit_price >= trade.take_profit
        else:
            assert trade.exit_price <= trade.stop_loss
        assert (
            trade.pnl
            == (trade.exit_price - trade.entry_price) * trade.quantity - trade.entry_fee - trade.exit_fee
        )


def test_a_failed_query_changes_nothing_and_the_next_pass_catches_up(live_world_factory):
    world = live_world_factory(2)
    _enter(world, sl="0.5", tp="0.0005")
    ctx = live_context(world.settings)
    world.admin.advance(to_ms=_ms(CLOSE + timedelta(minutes=30)))
    world.admin.set_faults(error_5xx=1.0, endpoints=["status_multiple"])
    report = reconcile_once(ctx)
    assert report.failed_accounts == 2
    assert {t.status for t in _trades(world)} == {"OPEN"}
    world.admin.clear_faults()
    reconcile_once(ctx)
    assert {(t.status, t.exit_type) for t in _trades(world)} == {("CLOSED", "TAKE_PROFIT")}


def test_an_order_the_exchange_never_received_becomes_lost_after_a_few_passes(live_world_factory):
    world = live_world_factory(1)
    _enter(world, sl="0.5", tp="0.5")
    with session_scope(world.settings) as session:
        trade = session.scalar(sa.select(Trade))
        session.add(Order(subscription_id=trade.subscription_id, trade_id=trade.id, leg="EXIT", client_order_id="xc-never-sent",
                          market="BTCUSDT", side="sell", order_type="market_order", quantity=trade.quantity, status="SENDING"))  # fmt: skip
    ctx = live_context(world.settings)
    for _ in range(LOST_AFTER):
        with session_scope(world.settings) as session:
            assert (
                session.scalar(sa.select(Order.status).where(Order.client_order_id == "xc-never-sent"))
                == "SENDING"
            )
        reconcile_once(ctx)
    with session_scope(world.settings) as session:
        lost = session.scalar(sa.select(Order).where(Order.client_order_id == "xc-never-sent"))
    assert lost.status == "LOST" and "no order" in lost.error
    assert _trades(world)[0].status == "OPEN"  # unknown is never treated as closed


def test_an_order_placed_outside_xcoin_is_flagged_external(live_world_factory):
    world = live_world_factory(1)
    _enter(world, sl="0.5", tp="0.5")
    sub_id = next(iter(world.keys))
    with CoinDCXClient(world.sim.url, world.sim.url, world.keys[sub_id]) as client:
        client.create_order("BTCUSDT", "buy", "limit_order", "0.01", "1000", client_order_id="manual-by-user")
    report = reconcile_once(live_context(world.settings), audit=True)
    assert report.transitions["external"] == 1
    with session_scope(world.settings) as session:
        external = session.scalar(sa.select(Order).where(Order.status == "EXTERNAL"))
    assert external.raw_last_response["client_order_id"] == "manual-by-user"


def test_the_dagster_reconcile_job_closes_trades_and_reports_its_pass(live_world_factory):
    import dagster as dg

    from xcoin_pipelines.defs.reconcile.jobs import reconcile_every_minute, reconcile_job
    from xcoin_pipelines.resources import XcoinSettingsResource

    world = live_world_factory(2)
    _enter(world, sl="0.5", tp="0.0005")
    world.admin.advance(to_ms=_ms(CLOSE + timedelta(minutes=30)))
    result = reconcile_job.execute_in_process(resources={"xcoin": XcoinSettingsResource()})
    assert result.success
    [observation] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    metadata = observation.event_specific_data.asset_observation.metadata
    assert metadata["accounts"].value == 2 and metadata["transitions/closed_take_profit"].value == 2
    assert {t.exit_type for t in _trades(world)} == {"TAKE_PROFIT"}
    ctx = dg.build_schedule_context(scheduled_execution_time=CLOSE)
    [request] = reconcile_every_minute.evaluate_tick(ctx).run_requests
    assert request.run_key == "reconcile|2024-01-01T01:00Z"
    assert request.run_config["ops"]["reconcile_pass"]["config"]["audit"] is True


def test_an_exit_after_the_exchange_already_closed_a_futures_position_never_opens_a_new_one(
    live_world_factory,
):
    world = live_world_factory(2, symbol="B-BTC_USDT")
    _enter(world, symbol="B-BTC_USDT", sl="0.0005", tp="0.0005")
    moment = CLOSE
    keys = list(world.keys.values())
    for _ in range(600):  # let the exchange's own TP/SL close both positions; no reconcile pass yet
        moment += timedelta(minutes=1)
        world.admin.advance(to_ms=_ms(moment))
        with (
            CoinDCXClient(world.sim.url, world.sim.url, keys[0]) as a,
            CoinDCXClient(world.sim.url, world.sim.url, keys[1]) as b,
        ):
            if not any(p.active_pos for c in (a, b) for p in c.futures_positions()):
                break
    world.set_action("EXIT")
    [report] = run_candle_close(
        live_context(world.settings), "B-BTC_USDT", "1m", moment, now=moment + timedelta(seconds=1)
    )
    assert {o["status"] for o in report.outcomes.values()} == {"NO_POSITION"}
    for creds in keys:
        with CoinDCXClient(world.sim.url, world.sim.url, creds) as client:
            assert all(p.active_pos == 0 for p in client.futures_positions())  # nothing opened the other way
    with session_scope(world.settings) as session:
        exits = list(
            session.scalars(sa.select(Order).where(Order.leg == "EXIT", Order.execution_id.is_not(None)))
        )
    assert exits and all(o.status == "CANCELLED" and "already closed" in o.error for o in exits)
    reconcile_once(live_context(world.settings), now=moment)
    assert {t.exit_type for t in _trades(world)} <= {"TAKE_PROFIT", "STOP_LOSS"}
    assert {t.status for t in _trades(world)} == {"CLOSED"}


def test_a_live_run_after_downtime_reconciles_first_and_skips_it_when_the_schedule_is_fresh(
    live_world_factory,
):
    import dagster as dg

    from xcoin_pipelines.defs.live.jobs import candle_run_config, live_execution_job
    from xcoin_pipelines.defs.reconcile.jobs import reconcile_job
    from xcoin_pipelines.resources import XcoinSettingsResource

    world = live_world_factory(2)
    _enter(world, sl="0.5", tp="0.0005")  # the take profits fill on the exchange while nobody watches
    later = CLOSE + timedelta(minutes=30)
    world.admin.advance(to_ms=_ms(later))
    resources = {"xcoin": XcoinSettingsResource()}
    config = candle_run_config("BTCUSDT", "1m", later.isoformat(), (later + timedelta(seconds=1)).isoformat())
    with dg.instance_for_test() as instance:
        first = live_execution_job.execute_in_process(
            run_config=config, instance=instance, resources=resources
        )
        assert first.success
        logs = [e.message for e in instance.all_logs(first.run_id) if e.message]
        assert any("start-up reconcile" in m for m in logs)
        assert {(t.status, t.exit_type) for t in _trades(world)} == {("CLOSED", "TAKE_PROFIT")}
        assert reconcile_job.execute_in_process(instance=instance, resources=resources).success
        nxt = later + timedelta(minutes=1)
        world.admin.advance(to_ms=_ms(nxt))
        config = candle_run_config("BTCUSDT", "1m", nxt.isoformat(), (nxt + timedelta(seconds=1)).isoformat())
        second = live_execution_job.execute_in_process(
            run_config=config, instance=instance, resources=resources
        )
        assert second.success
        assert not any("start-up reconcile" in (e.message or "") for e in instance.all_logs(second.run_id))
