"""Follow every order to its end and close trades with their exact realised P&L.

One pass: load what is unresolved from the store and ask each account's exchange in batches
(`accounts`), apply the answers in one transaction (orders here, by `lifecycle.apply_report`, the
rule the fan-out records with; futures positions in `futures_sync`), then act where a spot stop was
crossed or a take profit is missing (`spot_guard`: intents first, sent by the fan-out's own step).

What is "unknown" stays unknown (nautilus_trader's rule): a query that failed changes nothing and is
retried next pass; an order the exchange does not know is LOST only after `LOST_AFTER` passes; a
flat futures position without a closing order we can see is flagged, never guessed.

Transitions (`lifecycle.advance_trade`):
- ENTRY with a fill → trade OPEN at the fills' average price and fee, following further fills;
  ended short of its quantity → flag PARTIAL_ENTRY; ended without a fill → trade FAILED.
- spot TAKE_PROFIT filled → trade CLOSED (TAKE_PROFIT).
- spot stop: last price at or through the stop → cancel the take profit, market sell, CLOSED (STOP_LOSS).
  If the take profit filled first (the cancel says so), the trade closes as TAKE_PROFIT (flag RACE).
- futures: position flat → the closing order names the exit (`futures_sync.exit_type_of`).
- an exchange order with a client id we never issued → flagged EXTERNAL (audit passes).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.exchange.models import parse_time
from xcoin_trading.live import event_loop, fanout
from xcoin_trading.live.accounts import AccountWork, ReconcileReport, ask_all, load_work, ticker
from xcoin_trading.live.futures_sync import (
    adopt_positions,
    apply_futures,
    send_protection,
    unprotected_futures,
)
from xcoin_trading.live.spot_guard import note_outcomes, restore_take_profits, stop_outs
from xcoin_trading.live.trades import close_trade
from xcoin_trading.store.db import rows_changed, session_scope
from xcoin_trading.store.lifecycle import (
    ENDED_TRADE,
    WATCHED,
    ExecutionStatus,
    Leg,
    OrderStatus,
    TradeStatus,
    advance_trade,
    apply_report,
    order_status_of,
)
from xcoin_trading.store.models import BrokerCredential, Order, StrategyExecution, Trade
from xcoin_trading.timeframes import utcnow

if TYPE_CHECKING:
    from xcoin_trading.live.context import LiveContext

__all__ = ["LOST_AFTER", "WATCHED", "ReconcileReport", "reconcile_once"]
LOST_AFTER = 3  # passes in which the exchange had no such order


def _apply_spot(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    _apply_orders(session, w.orders, w.spot, True, now, report)
    if w.futures_orders is not None and w.futures_watch:
        answers = {o.client_order_id: o for o in w.futures_orders if o.client_order_id}
        _apply_orders(session, w.futures_watch, answers, w.futures_complete, now, report)
    session.flush()  # the futures closes below must see the orders resolved here as taken


def _apply_orders(session: Session, orders: list[Order], answers: dict[str, ExchangeOrder], complete: bool,
                  now: datetime, report: ReconcileReport) -> None:  # fmt: skip
    """Each order as the exchange answered for its client id; absent only counts when the answer was
    complete (a futures order list read only in part says nothing about the rest)."""
    trade_ids = {o.trade_id for o in orders if o.trade_id}
    trades = (
        {t.id: t for t in session.scalars(select(Trade).where(Trade.id.in_(trade_ids)))} if trade_ids else {}
    )
    # One query for the account's orders (not one per order), and no write where nothing moved:
    # a resting order asked every minute must not cost an UPDATE every minute.
    ids = [o.id for o in orders]
    fresh = {o.id: o for o in session.scalars(select(Order).where(Order.id.in_(ids)))} if ids else {}
    for stale in orders:
        order = fresh[stale.id]
        if order.status not in WATCHED:  # another pass or the fan-out got there first
            continue
        ex = answers.get(order.client_order_id)
        trade = trades.get(order.trade_id) if order.trade_id else None
        if ex is None and not complete:
            continue
        if ex is None:
            order.lookup_misses += 1
            if order.lookup_misses >= LOST_AFTER:
                order.status, order.error = (
                    OrderStatus.LOST,
                    f"the exchange has no order {order.client_order_id} after {order.lookup_misses} passes",
                )
                report.count("order_lost")
                pending = trade is not None and trade.status == TradeStatus.PENDING
                advance_trade(order, trade, now)
                if pending and trade is not None and trade.status == TradeStatus.FAILED:
                    trade.flags = [*trade.flags, "ENTRY_LOST"]
            continue
        before = order.status
        seen = (order.exchange_order_id, order.status, order.filled_quantity, order.fee, order.lookup_misses)
        if seen == (ex.id, order_status_of(ex), ex.filled_quantity, ex.fee_amount, 0):
            continue
        order.lookup_misses = 0
        closing = apply_report(order, ex, trade, now)
        if order.status != before:
            report.count(f"{order.leg.lower()}_{order.status.lower()}")
        if closing is not None and trade is not None:  # an exit only ever comes with its trade
            close_trade(session, trade, exit_price=closing.price, exit_fee=closing.fee, exit_type=closing.type,
                        exit_time=closing.time)  # fmt: skip
            report.count(f"closed_{order.leg.lower()}")


def _settle_pending(session: Session, report: ReconcileReport, subscription_ids: list[int] | None) -> None:
    """A PENDING trade takes its entry's outcome as stored (the fan-out may have recorded it after
    the pass that asked): open with its fills, or failed."""
    query = (
        select(Trade, Order)
        .outerjoin(Order, (Order.trade_id == Trade.id) & (Order.leg == Leg.ENTRY))
        .where(Trade.status == TradeStatus.PENDING)
    )
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    for trade, entry in session.execute(query).all():
        if entry is None:  # written with its entry in one transaction: never sent
            trade.status, trade.flags = TradeStatus.FAILED, [*trade.flags, "NO_ENTRY_ORDER"]
        else:
            advance_trade(entry, trade, _answer_time(entry))
            if trade.status == TradeStatus.PENDING:
                continue
        report.count(f"pending_{trade.status.lower()}")


def _answer_time(order: Order) -> datetime:
    """When the exchange last changed the order, from its stored answer; the row's own time (when
    it was written, later) only when the answer carries none. A trade's entry time is the fill's:
    a closing trigger the exchange created after the fill is not mistaken for an older one."""
    raw = order.raw_last_response or {}
    stamp = raw.get("updated_at") or raw.get("created_at")
    return parse_time(stamp) if stamp else order.updated_at


def _flag_external(session: Session, w: AccountWork, report: ReconcileReport) -> None:
    if not w.external:
        return
    ids = [o.client_order_id for o in w.external if o.client_order_id]
    ours = (
        set(session.scalars(select(Order.client_order_id).where(Order.client_order_id.in_(ids))))
        if ids
        else set()
    )
    for ex in w.external:
        if ex.client_order_id in ours:
            continue
        cid = f"ext-{ex.id}"[:36]
        if session.scalar(select(Order.id).where(Order.client_order_id == cid)) is None:
            session.add(Order(leg=Leg.EXIT, client_order_id=cid, exchange_order_id=ex.id, market=ex.market, side=ex.side,
                              order_type=ex.order_type, price=ex.price, quantity=ex.total_quantity,
                              filled_quantity=ex.filled_quantity, status=OrderStatus.EXTERNAL, raw_last_response=ex.raw,
                              error=f"order on account of user {w.credential.user_id} that xcoin never placed"))  # fmt: skip
            report.count("external")


def _sweep(session: Session, report: ReconcileReport) -> None:
    """An intent never sent (INTENT) whose trade is no longer open will never be sent: settled."""
    swept = rows_changed(
        session,
        update(Order)
        .where(Order.status == OrderStatus.INTENT,
               Order.trade_id.in_(select(Trade.id).where(Trade.status.in_(ENDED_TRADE))))
        .values(status=OrderStatus.CANCELLED, error="never sent: its trade closed otherwise")
        .execution_options(synchronize_session=False),
    )  # fmt: skip
    if swept:
        report.count("intent_settled", swept)


def _close_dead_flattens(session: Session, report: ReconcileReport) -> None:
    """A flatten whose worker died is never left RUNNING: once each of its orders is final (this
    reconciler resolves them) it is closed as FAILED; `live flatten` run again takes over one still
    unresolved."""
    from xcoin_trading.live.locks import holder_is_dead

    for row in session.scalars(
        select(StrategyExecution).where(StrategyExecution.status == ExecutionStatus.RUNNING,
                                        StrategyExecution.interval_key.like("%_flatten"))
    ):  # fmt: skip
        if not holder_is_dead(row.worker_id or ""):
            continue
        unresolved = session.scalar(
            select(Order.id).where(Order.execution_id == row.id, Order.status.in_(WATCHED)).limit(1)
        )
        if unresolved is None:
            row.status, row.finished_at = ExecutionStatus.FAILED, utcnow()
            stamp = (row.started_at or row.scheduled_at).strftime("%Y-%m-%dT%H:%M:%SZ")
            row.interval_key = f"{stamp}_{row.id}_flatten"  # gives the strategy's running key up
            row.error = (
                "its worker died; the reconciler resolved its orders: run the flatten again for what is open"
            )
            report.count("flatten_closed")


def reconcile_once(ctx: LiveContext, now: datetime | None = None, *, audit: bool = False,
                   subscription_ids: list[int] | None = None, protect: bool = True) -> ReconcileReport:  # fmt: skip
    """One reconcile pass over every account with unresolved orders or open futures trades
    (`subscription_ids`: only theirs, as a flatten asks; `protect=False`: no take profit or TP/SL is
    placed, as a flatten that closes the positions next wants)."""
    started = time.perf_counter()
    now = now or utcnow()
    report = ReconcileReport()
    with session_scope(ctx.settings) as session:
        work = list(load_work(session, subscription_ids, audit).values())
    report.accounts = len(work)
    if work:
        report.api_calls += event_loop.run(
            ask_all(ctx.api_url, ctx.public_url, ctx.vault, work, audit, ctx.concurrency)
        )
    protection: list[tuple[BrokerCredential, int, str, Any, Any]] = []
    with session_scope(ctx.settings) as session:
        for w in work:
            if w.error is not None:
                report.failed_accounts += 1
                continue
            _apply_spot(session, w, now, report)
            apply_futures(session, w, now, report)
            adopt_positions(session, w, now, report)
            _flag_external(session, w, report)
            for trade, position in unprotected_futures(session, w) if protect else []:
                tp = trade.take_profit if position.take_profit_trigger is None else None
                sl = trade.stop_loss if position.stop_loss_trigger is None else None
                protection.append((w.credential, trade.id, position.id, tp, sl))
    with session_scope(ctx.settings) as session:
        _settle_pending(session, report, subscription_ids)
        _sweep(session, report)
        if subscription_ids is None:
            _close_dead_flattens(session, report)
    if protection:
        report.api_calls += len(protection)
        for trade_id, error in event_loop.run(
            send_protection(ctx.api_url, ctx.public_url, ctx.vault, protection)
        ).items():
            with session_scope(ctx.settings) as session:
                trade = session.get_one(Trade, trade_id)
                flag = "PROTECTION_REFUSED" if error else "PROTECTION_RESTORED"
                if flag not in trade.flags:
                    trade.flags = [*trade.flags, flag]
                report.count("futures_protection_refused" if error else "futures_protection_restored")
    with session_scope(ctx.settings) as session:
        needs_price = session.scalar(
            select(Trade.id)
            .where(Trade.status == TradeStatus.OPEN, Trade.market_type == "spot",
                   Trade.stop_loss.is_not(None) | Trade.take_profit.is_not(None))
            .limit(1)
        )  # fmt: skip
    if needs_price is not None:
        report.api_calls += 1
        try:
            prices = event_loop.run(ticker(ctx.api_url, ctx.public_url))
        except ExchangeError:  # no price is not "not crossed" either: the stops are watched next pass
            report.count("ticker_unavailable")
            prices = {}
        with session_scope(ctx.settings) as session:
            jobs = stop_outs(session, prices, report, subscription_ids)
            if protect:
                stopping = {j.order.trade_id for j in jobs if j.order.trade_id is not None}
                jobs += restore_take_profits(session, prices, stopping, report, subscription_ids)
            fanout.mark_sending(session, jobs)
        if jobs:
            report.api_calls += 2 * len(jobs)
            event_loop.run(fanout.send_and_record(ctx, jobs, now, fanout.FanoutResult(),
                                               then=lambda session, closed: note_outcomes(session, jobs, closed, report)))  # fmt: skip
    report.duration_ms = int((time.perf_counter() - started) * 1000)
    return report
