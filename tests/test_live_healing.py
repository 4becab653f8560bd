"""Money paths that always heal (issue 15): every failure of a call that changes something is
classified as executed / not executed / unknown against the exchange's own answer, and the
reconciler drives every order and trade of both markets to a final state.

Each test here failed on the code before issue 15 (the old behaviour is named in its docstring)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from tests.fixtures.live import START
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.live.coordinator import live_context, run_candle_close
from xcoin_trading.live.reconcile import reconcile_once
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Order, Subscription, Trade

CLOSE = START + timedelta(hours=1)
PAIR = "B-BTC_USDT"


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def _rows(world, model, *where):
    with session_scope(world.settings) as session:
        return list(session.scalars(sa.select(model).where(*where).order_by(model.id)))


def _enter(world, **signal):
    return world.enter_at(CLOSE, **signal)


def _client(world, sub_id):
    return CoinDCXClient(world.sim.url, world.sim.url, world.keys[sub_id])


def _positions(world, sub_id):
    with _client(world, sub_id) as client:
        return {p.pair: p.active_pos for p in client.futures_positions() if p.active_pos}


def _usdt_total(world, sub_id) -> Decimal:
    b = world.admin.balances(world.keys[sub_id].api_key)["USDT"]
    return Decimal(b["balance"]) + Decimal(b.get("locked_balance") or 0)


def _assert_pnl_is_ledger(world):
    """Every trade closed, each account's USDT change == Σ realised P&L, counters == trades."""
    for sub_id in world.keys:
        trades = _rows(world, Trade, Trade.subscription_id == sub_id, Trade.status != "FAILED")
        assert all(t.status == "CLOSED" for t in trades), [(t.id, t.status) for t in trades]
        assert _usdt_total(world, sub_id) - Decimal(10000) == sum((t.pnl for t in trades), Decimal(0))
        [sub] = _rows(world, Subscription, Subscription.id == sub_id)
        assert (sub.total_trades, sub.total_pnl) == (len(trades), sum((t.pnl for t in trades), Decimal(0)))


def _flatten(world):
    from xcoin_trading.live.flatten import flatten
    from xcoin_trading.live.registry import StrategySettings
    from xcoin_trading.store.models import Strategy

    with session_scope(world.settings) as session:
        strategy = StrategySettings.from_row(session.get(Strategy, world.strategy_id))
    return flatten(live_context(world.settings), strategy)


def _next_candle_with_faults(world, action: str, *faults: dict):
    """The next candle's signal is `action`, traded while the simulator injects `faults`: its report."""
    world.admin.set_faults(*faults)
    world.set_action(action)
    moment = CLOSE + timedelta(minutes=1)
    world.admin.advance(to_ms=_ms(moment))
    [report] = run_candle_close(
        live_context(world.settings), PAIR, "1m", moment, now=moment + timedelta(seconds=1)
    )
    world.admin.clear_faults()
    return report


# ---- futures leverage (item 4) -----------------------------------------------------------------


def test_a_failed_leverage_call_is_read_back_and_the_entry_placed_not_left_unknown(live_world_factory):
    """Old: one 503 on update_leverage left the ENTRY UNKNOWN and its trade PENDING for ever.
    Now the position's leverage is read back: not set → set again, then the entry is sent."""
    world = live_world_factory(3, symbol=PAIR)
    world.admin.set_faults(error_5xx=1, count=3, endpoints=["update_leverage"])
    report = _enter(world, symbol=PAIR)
    assert {o["status"] for o in report.outcomes.values()} == {"PLACED"}
    trades = _rows(world, Trade)
    assert [t.status for t in trades] == ["OPEN"] * 3
    for trade in trades:
        assert _positions(world, trade.subscription_id) == {PAIR: trade.quantity}
    assert world.admin.faults()["injected"]["5xx"] == 3


def test_a_leverage_that_cannot_be_confirmed_fails_the_entry_unsent(live_world_factory):
    """Leverage refused on every try: the entry is never sent, so it is REJECTED (not executed)
    and its trade FAILED — never an UNKNOWN nobody resolves, never a position."""
    world = live_world_factory(2, symbol=PAIR)
    world.admin.set_faults(error_5xx=1, endpoints=["update_leverage"])
    report = _enter(world, symbol=PAIR)
    assert {o["status"] for o in report.outcomes.values()} == {"FAILED"}
    assert {t.status for t in _rows(world, Trade)} == {"FAILED"}
    assert {o.status for o in _rows(world, Order)} == {"REJECTED"}
    assert all(_positions(world, sub) == {} for sub in world.keys)


# ---- futures look-ups by client id (item 1) ----------------------------------------------------


def _lost_futures_entries(world, n):
    """Every create executes but its reply is lost, and the look-ups fail too: UNKNOWN entries."""
    world.admin.set_faults(
        {"lost_reply": 1, "count": n, "endpoints": ["futures/orders/create"]},
        {"error_5xx": 1, "count": 4 * n, "endpoints": ["derivatives/futures/orders"]},
    )
    _enter(world, symbol=PAIR)
    world.admin.clear_faults()
    assert {o.status for o in _rows(world, Order, Order.leg == "ENTRY")} == {"UNKNOWN"}
    assert {t.status for t in _rows(world, Trade)} == {"PENDING"}


def test_an_unknown_futures_entry_is_resolved_by_client_id_and_its_trade_opened(live_world_factory):
    """Old: the reconciler never asked about futures orders, so the trade stayed PENDING (and the
    subscription refused later entries) while a real position was open."""
    world = live_world_factory(2, symbol=PAIR)
    _lost_futures_entries(world, 2)
    reconcile_once(live_context(world.settings))
    for trade in _rows(world, Trade):
        [entry] = _rows(world, Order, Order.trade_id == trade.id, Order.leg == "ENTRY")
        with _client(world, trade.subscription_id) as client:
            [ex] = [o for o in client.futures_orders() if o.client_order_id == entry.client_order_id]
        assert (entry.status, entry.exchange_order_id, entry.fee) == ("FILLED", ex.id, ex.fee_amount)
        assert (trade.status, trade.quantity, trade.entry_price, trade.entry_fee) == (
            "OPEN", ex.filled_quantity, ex.avg_price, ex.fee_amount,
        )  # fmt: skip
    report = _flatten(world)
    assert report.status == "COMPLETED"
    assert all(_positions(world, sub) == {} for sub in world.keys)
    _assert_pnl_is_ledger(world)


def test_a_position_the_store_gave_up_on_is_linked_back_and_one_it_never_knew_is_adopted(live_world_factory):
    """Old: an entry marked LOST (its trade FAILED) whose order did execute left a position on the
    exchange that no trade held: its fee in the ledger, in no P&L, never closed. Now an audit pass
    links it back by client id; a position with no order of ours at all is adopted (flag ADOPTED),
    and both are flattened with P&L == ledger."""
    world = live_world_factory(2, symbol=PAIR)
    _lost_futures_entries(world, 2)
    first, second = sorted(world.keys)
    with session_scope(world.settings) as session:  # the store gave up on the first subscriber's entry
        trade = session.scalar(sa.select(Trade).where(Trade.subscription_id == first))
        trade.status = "FAILED"
        session.execute(sa.update(Order).where(Order.trade_id == trade.id).values(status="LOST"))
        other = session.scalar(sa.select(Trade).where(Trade.subscription_id == second))
        session.execute(sa.delete(Order).where(Order.trade_id == other.id))  # and never knew the second's
        session.delete(other)
    reconcile_once(live_context(world.settings), audit=True)
    [linked] = _rows(world, Trade, Trade.subscription_id == first)
    [adopted] = _rows(world, Trade, Trade.subscription_id == second)
    assert (linked.status, "RELINKED" in linked.flags) == ("OPEN", True)
    assert (adopted.status, adopted.flags) == ("OPEN", ["ADOPTED"])
    assert adopted.quantity == _positions(world, second)[PAIR]
    assert (adopted.take_profit, adopted.stop_loss) == (linked.take_profit, linked.stop_loss)  # its triggers
    _flatten(world)
    assert all(_positions(world, sub) == {} for sub in world.keys)
    _assert_pnl_is_ledger(world)


# ---- spot stop-out state machine (item 2) ------------------------------------------------------


def _walk_until(world, done, start=CLOSE, minutes=600):
    return world.reconcile_until(done, start, minutes)


def test_a_failed_take_profit_cancel_never_disarms_the_stop(live_world_factory):
    """Old: the cancel failed (503, not executed), the sell was refused (coins still locked by the
    take profit) and the stop was recorded CANCELLED "not needed: take profit filled first" (RACE)
    while the take profit still rested: the stop was disarmed for good. Now the cancel is confirmed
    by a look-up first; unconfirmed, nothing is sold and the stop stays armed for the next pass."""
    world = live_world_factory(2)
    _enter(world, sl="0.001", tp="0.5")
    world.admin.set_faults(error_5xx=1, endpoints=["orders/cancel"])  # every cancel fails this pass
    ctx = live_context(world.settings)
    moment = CLOSE
    for _ in range(600):
        moment += timedelta(minutes=1)
        world.admin.advance(to_ms=_ms(moment))
        report = reconcile_once(ctx, now=moment)
        if report.transitions.get("stop_deferred"):
            break
    else:
        raise AssertionError("the stop was never crossed")
    stops = _rows(world, Order, Order.leg == "STOP_LOSS")
    assert stops and {o.status for o in stops} == {"INTENT"}  # armed, never sent
    assert {t.status for t in _rows(world, Trade)} == {"OPEN"}
    world.admin.clear_faults()
    _walk_until(
        world,
        lambda: all(t.status == "CLOSED" for t in _rows(world, Trade)),
        start=moment - timedelta(minutes=1),
    )
    for trade in _rows(world, Trade):
        assert trade.exit_type in ("STOP_LOSS", "TAKE_PROFIT") and "RACE" not in trade.flags
        [tp] = _rows(world, Order, Order.trade_id == trade.id, Order.leg == "TAKE_PROFIT")
        assert tp.status == "CANCELLED" if trade.exit_type == "STOP_LOSS" else "FILLED"
        with _client(world, trade.subscription_id) as client:
            assert client.active_orders("BTCUSDT") == []  # no take profit left resting
    _assert_pnl_is_ledger(world)


def test_a_cancel_whose_reply_is_lost_is_read_back_and_the_stop_sells_in_the_same_pass(live_world_factory):
    world = live_world_factory(1)
    _enter(world, sl="0.001", tp="0.5")
    world.admin.set_faults(lost_reply=1, endpoints=["orders/cancel"])  # executed, the reply lost
    _walk_until(world, lambda: all(t.status == "CLOSED" for t in _rows(world, Trade)))
    [trade] = _rows(world, Trade)
    assert trade.exit_type == "STOP_LOSS"
    assert world.admin.faults()["injected"]["lost_reply"] == 1  # one cancel, confirmed by look-up
    world.admin.clear_faults()
    _assert_pnl_is_ledger(world)


def test_a_refused_stop_sell_stays_armed_and_sells_once_the_coins_are_free(live_world_factory):
    """The coins are locked by an order the user placed by hand: the stop's sell is refused. Old:
    CANCELLED "not needed" (RACE), never retried. Now it stays armed and sells on a later pass."""
    world = live_world_factory(1)
    _enter(world, sl="0.001", tp="0.5")
    [trade] = _rows(world, Trade)
    with _client(world, trade.subscription_id) as client:  # the user's own sell locks the coins
        [tp] = _rows(world, Order, Order.leg == "TAKE_PROFIT")
        client.cancel_order(client_order_id=tp.client_order_id)
        hand = client.create_order(
            "BTCUSDT", "sell", "limit_order", trade.quantity, price=trade.take_profit * 2
        )
    moment = _walk_until(
        world, lambda: bool(_rows(world, Order, Order.leg == "STOP_LOSS", Order.status == "INTENT"))
    )
    [stop] = _rows(world, Order, Order.leg == "STOP_LOSS")
    assert "refused" in stop.error and _rows(world, Trade)[0].status == "OPEN"
    with _client(world, trade.subscription_id) as client:
        client.cancel_order(id=hand.id)
    _walk_until(world, lambda: _rows(world, Trade)[0].status == "CLOSED", start=moment)
    [trade] = _rows(world, Trade)
    assert trade.exit_type == "STOP_LOSS" and "RACE" not in trade.flags
    _assert_pnl_is_ledger(world)


def test_an_unknown_futures_exit_is_resolved_and_its_pnl_recorded(live_world_factory):
    """Issue 20's forced case: a futures exit whose reply is lost and whose look-ups fail stays
    UNKNOWN; the old reconciler never asked about it, so the trade stayed open with its realised P&L
    unrecorded (ledger −5.8550 vs Σ P&L −1.98972). Now the next pass finds it by client id."""
    world = live_world_factory(2, symbol=PAIR)
    _enter(world, symbol=PAIR, sl="0.3", tp="0.3")
    _next_candle_with_faults(
        world,
        "EXIT",
        {"lost_reply": 1, "count": 2, "endpoints": ["futures/orders/create"]},
        {"error_5xx": 1, "count": 8, "endpoints": ["derivatives/futures/orders"]},
    )
    assert {o.status for o in _rows(world, Order, Order.leg == "EXIT")} == {"UNKNOWN"}
    assert all(_positions(world, sub) == {} for sub in world.keys)  # the exits did execute
    reconcile_once(live_context(world.settings))
    assert {(t.status, t.exit_type) for t in _rows(world, Trade)} == {("CLOSED", "SIGNAL")}
    _assert_pnl_is_ledger(world)


def test_a_reversal_whose_exit_is_not_confirmed_never_sends_its_entry(live_world_factory):
    """Found by the chaos test (seed 337081301): a SHORT signal on an open LONG sent its exit and,
    when the exit failed (503 on both sends, never executed), sent the SHORT entry anyway. On a
    futures pair that sell closed the LONG: the exchange was flat while the store held the LONG and
    the SHORT open, neither ever closed (FLAT_WITHOUT_CLOSE). Now the entry waits for a confirmed
    exit: the LONG stays open and protected, the SHORT fails unsent, and a flatten closes the LONG."""
    world = live_world_factory(1, symbol=PAIR)
    [sub_id] = world.keys
    _enter(world, symbol=PAIR, sl="0.3", tp="0.3")
    [long] = _rows(world, Trade)
    assert _positions(world, sub_id) == {PAIR: long.quantity}
    both_sends_of_the_exit = {"error_5xx": 1, "count": 2, "endpoints": ["futures/orders/create"]}
    report = _next_candle_with_faults(world, "SHORT", both_sends_of_the_exit)
    assert world.admin.faults()["injected"]["5xx"] == 2
    outcome = report.outcomes[sub_id]
    assert outcome["status"] == "UNKNOWN" and "its reversing entry not sent" in outcome["reason"], outcome
    assert _positions(world, sub_id) == {PAIR: long.quantity}  # the LONG is untouched on the exchange
    trades = {t.id: t for t in _rows(world, Trade)}
    assert trades[long.id].status == "OPEN"
    [short] = [t for t in trades.values() if t.id != long.id]
    assert short.status == "FAILED"
    [entry] = _rows(world, Order, Order.trade_id == short.id)
    assert (entry.status, entry.exchange_order_id) == ("CANCELLED", None)
    with _client(world, sub_id) as client:
        assert entry.client_order_id not in {o.client_order_id for o in client.futures_orders()}
    for _ in range(3):  # the exchange never had the exit: LOST once it says so three passes running
        reconcile_once(live_context(world.settings))
    [exit_order] = _rows(world, Order, Order.leg == "EXIT")
    assert exit_order.status == "LOST" and _rows(world, Trade, Trade.id == long.id)[0].status == "OPEN"
    report = _flatten(world)
    assert report.status == "COMPLETED" and report.error is None, report.outcomes
    assert _positions(world, sub_id) == {}
    _assert_pnl_is_ledger(world)


def test_a_flatten_names_a_position_closed_by_an_order_it_cannot_see(live_world_factory):
    """A futures position closed on the exchange by a plain order xcoin never placed (say, by hand):
    the reconciler guesses nothing and flags the trade FLAT_WITHOUT_CLOSE. A flatten used to answer
    "the reconciler records its close", which it never does for such a trade; now it says what is
    wrong and what to do, and exits as not closed."""
    world = live_world_factory(1, symbol=PAIR)
    [sub_id] = world.keys
    _enter(world, symbol=PAIR, sl="0.3", tp="0.3")
    [trade] = _rows(world, Trade)
    with _client(world, sub_id) as client:
        client.futures_create_order(PAIR, "sell", "market_order", trade.quantity)  # by hand, no client id
    reconcile_once(live_context(world.settings))
    assert _rows(world, Trade)[0].flags == ["FLAT_WITHOUT_CLOSE"]
    report = _flatten(world)
    outcome = report.outcomes[sub_id]
    assert outcome["status"] == "NOT_CLOSED" and report.error is not None
    assert f"trade(s) {trade.id} flagged FLAT_WITHOUT_CLOSE" in outcome["reason"], outcome
    assert "the reconciler records its close" not in outcome["reason"]


def test_a_reversal_whose_exit_executed_unseen_holds_its_entry_and_heals(live_world_factory):
    """The other side of the rule above: the exit executes but its reply is lost and the look-ups
    fail, so it is UNKNOWN. The SHORT entry is held back (the exchange is flat, no SHORT opened by
    accident), the next pass finds the exit filled and closes the LONG with the exchange's figures."""
    world = live_world_factory(1, symbol=PAIR)
    [sub_id] = world.keys
    _enter(world, symbol=PAIR, sl="0.3", tp="0.3")
    [long] = _rows(world, Trade)
    report = _next_candle_with_faults(
        world,
        "SHORT",
        {"lost_reply": 1, "count": 1, "endpoints": ["futures/orders/create"]},
        {"error_5xx": 1, "count": 8, "endpoints": ["derivatives/futures/orders"]},
    )
    assert report.outcomes[sub_id]["status"] == "UNKNOWN", report.outcomes
    assert _positions(world, sub_id) == {}  # the exit did execute; nothing else was sent
    [exit_order] = _rows(world, Order, Order.leg == "EXIT")
    assert exit_order.status == "UNKNOWN"
    reconcile_once(live_context(world.settings))
    trades = {t.id: t for t in _rows(world, Trade)}
    assert (trades[long.id].status, trades[long.id].exit_type) == ("CLOSED", "SIGNAL")
    assert [t.status for t in trades.values() if t.id != long.id] == ["FAILED"]
    _assert_pnl_is_ledger(world)
