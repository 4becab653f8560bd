"""Reconciler, spot: a crossed stop becomes a STOP_LOSS market sell (cancel the take profit first,
confirmed); an open trade without a live take profit gets it (re)placed. Both are intents sent and
recorded by the fan-out's own step (`fanout.send_and_record`)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.live import fanout
from xcoin_trading.live.accounts import ReconcileReport
from xcoin_trading.live.trades import client_order_id
from xcoin_trading.store.lifecycle import (
    NOT_EXECUTED,
    PROTECTING,
    UNRESOLVED,
    WATCHED,
    Leg,
    OrderStatus,
    TradeStatus,
)
from xcoin_trading.store.models import BrokerCredential, Order, Subscription, Trade

MAX_TAKE_PROFITS = 5  # placements of a take profit per trade before the operator is asked


def stop_outs(session: Session, prices: dict[str, Decimal], report: ReconcileReport,
               subscription_ids: list[int] | None = None) -> list[fanout.Job]:  # fmt: skip
    """Spot LONG trades whose stop was crossed: STOP_LOSS market-sell intents. Each is a small state
    machine run by `send_all` against the exchange's truth: cancel the take profit and confirm it is
    cancelled (or filled: then no sell), only then sell; anything unconfirmed leaves the stop armed
    (INTENT) for the next pass. No failed call ever ends it."""
    stops: list[tuple[Order, BrokerCredential, str | None]] = []
    take_profits: dict[int, dict[int, str]] = {}  # strategy id -> open trade id -> TP client id
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == TradeStatus.OPEN, Trade.market_type == "spot", Trade.stop_loss.is_not(None))
    )
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    for trade, cred in session.execute(query).all():
        price, stop = prices.get(trade.symbol), trade.stop_loss  # a stop is set (the query asks for one)
        if price is None or stop is None or price > stop:
            continue
        cid = client_order_id(trade.execution_id or 0, trade.subscription_id, Leg.STOP_LOSS, trade.id)
        order = session.scalar(select(Order).where(Order.client_order_id == cid))
        if order is None:
            market = default_market(trade.symbol)
            order = Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                          leg=Leg.STOP_LOSS, client_order_id=cid, market=trade.symbol, side="sell",
                          order_type="market_order", quantity=market.round_quantity(trade.quantity), status=OrderStatus.INTENT)  # fmt: skip
            session.add(order)
            report.count("stop_triggered")
        if order.status in NOT_EXECUTED and not order.filled_quantity:
            # Never executed (never reached the exchange, or refused): the stop must stay armed.
            order.status = OrderStatus.UNKNOWN  # asked by client id first, then sent
        if order.status in UNRESOLVED:
            if trade.strategy_id not in take_profits:
                take_profits[trade.strategy_id] = fanout.take_profits_of(session, trade.strategy_id)
            tp = take_profits[trade.strategy_id].get(trade.id)
            stops.append((order, cred, tp))
    session.flush()
    return [fanout.Job(fanout.Intent.of(order), "spot", cred, cancel_first=tp, on_defer=OrderStatus.INTENT,
                       retry_refused=True)
            for order, cred, tp in stops]  # fmt: skip


def restore_take_profits(session: Session, prices: dict[str, Decimal], stopping: set[int], report: ReconcileReport,
                          subscription_ids: list[int] | None = None) -> list[fanout.Job]:  # fmt: skip
    """An open spot trade without a live take profit on the exchange gets it (re)placed: the same
    client id when it may never have arrived (the exchange refuses a duplicate id, so a late
    original and this resend cannot both exist), a new one after a cancel or refusal."""
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == TradeStatus.OPEN, Trade.market_type == "spot", Trade.side == "LONG",
               Trade.take_profit.is_not(None))
        .where(~exists().where(Order.trade_id == Trade.id, Order.leg == Leg.TAKE_PROFIT,
                               Order.status.in_(PROTECTING)))
    )  # fmt: skip  # only the unprotected: a pass over 10 000 protected trades reads none of them
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    rows = session.execute(query).all()
    if not rows:
        return []
    orders: dict[int, list[Order]] = defaultdict(list)
    for order in session.scalars(
        select(Order).where(Order.trade_id.in_([t.id for t, _ in rows])).order_by(Order.id)
    ):
        if order.trade_id is not None:  # selected by trade id: always set
            orders[order.trade_id].append(order)
    jobs = []
    for trade, cred in rows:
        price = prices.get(trade.symbol)
        if trade.id in stopping or (
            trade.stop_loss is not None and (price is None or price <= trade.stop_loss)
        ):
            continue  # its stop-out owns it (or no price: nothing can be said this pass)
        legs = orders[trade.id]
        tps = [o for o in legs if o.leg == Leg.TAKE_PROFIT]
        if any(o.status in PROTECTING for o in tps):
            continue
        if any(o.leg == Leg.ENTRY and o.status in WATCHED for o in legs):
            continue  # still filling: its take profit is placed for all that filled once it is final
        if any(o.leg in (Leg.STOP_LOSS, Leg.EXIT) and o.status in WATCHED
               for o in legs):  # fmt: skip
            continue  # a sell is in flight: a take profit now would lock the same coins
        held = default_market(trade.symbol).round_quantity(trade.quantity)
        maybe_sent = [o for o in tps if o.status in (*UNRESOLVED, OrderStatus.LOST)]
        if maybe_sent:
            tp = maybe_sent[-1]
            if tp.status in (OrderStatus.SENDING, OrderStatus.UNKNOWN) and tp.lookup_misses == 0:
                continue  # not yet found absent: it may be on its way right now
            tp.status = OrderStatus.UNKNOWN if tp.status != OrderStatus.INTENT else OrderStatus.INTENT
        elif len(tps) >= MAX_TAKE_PROFITS:
            if "UNPROTECTED" not in trade.flags:
                trade.flags = [*trade.flags, "UNPROTECTED"]
                report.count("take_profit_given_up")
            continue
        else:
            cid = client_order_id(trade.execution_id or 0, trade.subscription_id, Leg.TAKE_PROFIT, trade.id)
            tp = Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                       leg=Leg.TAKE_PROFIT, client_order_id=f"{cid}.{len(tps)}"[:36], market=trade.symbol, side="sell",
                       order_type="limit_order", quantity=held, price=trade.take_profit, status=OrderStatus.INTENT)  # fmt: skip
            session.add(tp)
        report.count("take_profit_restored")
        jobs.append((tp, cred, held))
    session.flush()
    return [fanout.Job(fanout.Intent.of(tp), "spot", cred, send_quantity=held) for tp, cred, held in jobs]


def note_outcomes(session: Session, jobs: list[fanout.Job], closed: dict[int, Decimal],
                  report: ReconcileReport) -> None:  # fmt: skip
    """Counted and flagged in the transaction that records the answers."""
    for job in jobs:
        if job.deferred is not None:
            report.count("stop_deferred")
        tp = job.take_profit_seen
        race = tp is not None and tp.status == "filled" and job.order.trade_id is not None
        if race:
            trade = session.get_one(Trade, job.order.trade_id)
            if "RACE" not in trade.flags:  # the take profit filled before the stop's cancel reached it
                trade.flags = [*trade.flags, "RACE"]
            report.count("race")
        if job.order.trade_id in closed:  # by this job's own fill, or by the take profit it raced
            report.count("closed_take_profit" if race else f"closed_{job.order.leg.lower()}")
