"""Reconciler, futures: a flat position closes its trade with the exchange's closing order; a
position the store does not know is linked back or adopted; an open position without its TP/SL
trigger gets it again. Nothing is guessed: a flat position without a visible close is flagged."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AsyncCoinDCXClient
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.live.accounts import AccountWork, ReconcileReport
from xcoin_trading.live.trades import client_order_id, close_trade
from xcoin_trading.services.credentials import decrypt
from xcoin_trading.store.lifecycle import OPEN_TRADE, ExitReason, Leg, OrderStatus, TradeStatus, order_values
from xcoin_trading.store.models import BrokerCredential, Order, Strategy, Subscription, Trade


def exit_type_of(ex: ExchangeOrder) -> ExitReason:
    """The exchange's closing order names the exit: tpsl_exit take_profit/stop → TAKE_PROFIT /
    STOP_LOSS, liquidate → LIQUIDATION, exit or anything else → MANUAL."""
    if ex.stage == "liquidate":
        return ExitReason.LIQUIDATION
    if ex.stage == "tpsl_exit":
        return ExitReason.TAKE_PROFIT if "take_profit" in ex.order_type else ExitReason.STOP_LOSS
    return ExitReason.MANUAL


def apply_futures(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    for stale in w.futures_trades:
        trade = session.get_one(Trade, stale.id)
        if trade.status != TradeStatus.OPEN:
            continue
        position = (w.positions or {}).get(trade.symbol)
        if position is not None and position.active_pos != 0:
            continue
        # Created at or after the entry (a trigger is created when the entry fills), and not already
        # the exit of an earlier trade: that one may have closed in the very millisecond we re-entered.
        closing = [
            o for o in (w.futures_orders or [])
            if o.market == trade.symbol and o.status == "filled" and o.stage in ("tpsl_exit", "liquidate", "exit")
            and (trade.entry_time is None or (o.created_at or o.updated_at) >= trade.entry_time)
        ]  # fmt: skip
        if closing:
            taken = set(
                session.scalars(
                    select(Order.exchange_order_id).where(
                        Order.exchange_order_id.in_([o.id for o in closing])
                    )
                )
            )
            closing = [o for o in closing if o.id not in taken]
        if not closing:
            if "FLAT_WITHOUT_CLOSE" not in trade.flags:
                trade.flags = [*trade.flags, "FLAT_WITHOUT_CLOSE"]
                report.count("futures_flat_unexplained")
            continue
        ex = min(closing, key=lambda o: o.updated_at)
        exit_type = exit_type_of(ex)
        leg = Leg(exit_type) if exit_type in (ExitReason.TAKE_PROFIT, ExitReason.STOP_LOSS) else Leg.EXIT
        session.add(Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                          leg=leg, client_order_id=client_order_id(trade.execution_id or 0, trade.subscription_id, leg, trade.id),
                          exchange_order_id=ex.id, market=trade.symbol, side=ex.side, order_type=ex.order_type,
                          stop_price=ex.stop_price or None, quantity=ex.total_quantity, filled_quantity=ex.filled_quantity,
                          avg_price=ex.avg_price, fee=ex.fee_amount, status=OrderStatus.FILLED, raw_last_response=ex.raw))  # fmt: skip
        session.flush()  # the next trade of this account must see this order as taken
        close_trade(session, trade, exit_price=ex.avg_price, exit_fee=ex.fee_amount, exit_type=exit_type,
                    exit_time=ex.updated_at or now)  # fmt: skip
        report.count(f"closed_{exit_type.lower()}")


def adopt_positions(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    """A futures position the store does not know: an entry of ours the store gave up on is linked
    back to its trade (found by client id); anything else is adopted as a trade flagged ADOPTED,
    so it is protected, closed by a flatten and in the P&L. Never on a pair the store touched since
    the question was asked (its answer may predate a close we just recorded)."""
    if w.positions is None or w.futures_orders is None:
        return
    subs = list(session.execute(
        select(Subscription.id, Subscription.user_id, Subscription.strategy_id, Strategy.symbol)
        .join(Strategy, Strategy.id == Subscription.strategy_id)
        .where(Subscription.broker_credential_id == w.credential.id)
    ).all())  # fmt: skip
    sub_ids = [s.id for s in subs]
    if not sub_ids:
        return
    for pair, position in w.positions.items():
        if position.active_pos == 0:
            continue
        known = session.scalars(
            select(Trade).where(Trade.subscription_id.in_(sub_ids), Trade.symbol == pair)
            .where((Trade.status.in_(OPEN_TRADE)) | (Trade.updated_at >= w.asked_at))
        ).first()  # fmt: skip
        if known is not None:
            continue
        side = "buy" if position.active_pos > 0 else "sell"
        taken = set(session.scalars(select(Order.exchange_order_id).where(
            Order.exchange_order_id.in_([o.id for o in w.futures_orders]))))  # fmt: skip
        fills = [o for o in w.futures_orders if o.market == pair and o.status == "filled" and o.side == side
                 and o.stage not in ("tpsl_exit", "liquidate", "exit") and o.id not in taken]  # fmt: skip
        entry = max(fills, key=lambda o: o.updated_at) if fills else None
        ours = (
            session.scalar(select(Order).where(Order.client_order_id == entry.client_order_id))
            if entry is not None and entry.client_order_id
            else None
        )
        if entry is not None and ours is not None and ours.trade_id is not None:
            trade = session.get_one(Trade, ours.trade_id)
            for name, value in order_values(entry, ours.quantity).items():
                setattr(ours, name, value)
            ours.lookup_misses = 0
            ours.error = "found on the exchange after it was given up: linked back to its trade"
            trade.status, trade.quantity, trade.entry_price = (
                TradeStatus.OPEN,
                entry.filled_quantity,
                entry.avg_price,
            )
            trade.entry_fee = trade.fees = entry.fee_amount
            trade.entry_time = entry.updated_at or now
            trade.flags = [*trade.flags, "RELINKED"]
            report.count("position_relinked")
            continue
        owner = next((s for s in subs if s.symbol == pair), None)
        if owner is None:
            report.count("position_unknown_no_subscription")
            continue
        # The entry fill that explains the whole position, if one does: its fee is the trade's.
        exact = entry if entry is not None and entry.filled_quantity == abs(position.active_pos) else None
        trade = Trade(subscription_id=owner.id, strategy_id=owner.strategy_id, user_id=owner.user_id, symbol=pair,
                      market_type="futures", side="LONG" if position.active_pos > 0 else "SHORT",
                      quantity=abs(position.active_pos), leverage=position.leverage, entry_price=position.avg_price,
                      take_profit=position.take_profit_trigger, stop_loss=position.stop_loss_trigger, status=TradeStatus.OPEN,
                      entry_fee=exact.fee_amount if exact is not None else Decimal(0), fees=exact.fee_amount if exact is not None else Decimal(0),
                      entry_time=(exact.updated_at if exact is not None else position.updated_at) or now,
                      flags=["ADOPTED"] if exact is not None else ["ADOPTED", "ADOPTED_FEE_UNKNOWN"])  # fmt: skip
        session.add(trade)
        session.flush()
        if exact is not None:
            session.add(Order(subscription_id=owner.id, trade_id=trade.id, leg=Leg.ENTRY,
                              client_order_id=(exact.client_order_id or f"adopt-{exact.id}")[:36],
                              exchange_order_id=exact.id, market=pair, side=side, order_type=exact.order_type,
                              quantity=exact.total_quantity, filled_quantity=exact.filled_quantity,
                              avg_price=exact.avg_price, fee=exact.fee_amount, status=OrderStatus.FILLED, raw_last_response=exact.raw,
                              error="adopted: a position on the exchange the store did not know"))  # fmt: skip
        session.flush()
        report.count("position_adopted")


def unprotected_futures(session: Session, w: AccountWork) -> list[tuple[Trade, Any]]:
    """Open futures trades whose exchange position lacks a TP/SL trigger the trade has a level for."""
    if w.positions is None:
        return []
    out = []
    for stale in w.futures_trades:
        trade = session.get_one(Trade, stale.id)
        position = w.positions.get(trade.symbol)
        if trade.status != TradeStatus.OPEN or position is None or position.active_pos == 0:
            continue
        if (trade.take_profit is not None and position.take_profit_trigger is None) or (
            trade.stop_loss is not None and position.stop_loss_trigger is None
        ):
            out.append((trade, position))
    return out


async def send_protection(api_url: str, public_url: str, vault, needs: list[tuple[BrokerCredential, int, str, Any, Any]]) -> dict[int, str | None]:  # fmt: skip
    """Position-level TP/SL for futures positions that lack them; {trade id: error or None}.
    create_tpsl refuses a leg that already exists, so a resend after an unknown reply cannot add a second."""
    out: dict[int, str | None] = {}
    async with AsyncCoinDCXClient(api_url, public_url) as base:
        for cred, trade_id, position_id, tp, sl in needs:
            keys = decrypt(vault, cred)
            client = base.with_credentials(Credentials(keys.api_key.reveal(), keys.api_secret.reveal()))
            try:
                answer = await client.futures_create_tpsl(position_id, take_profit=tp, stop_loss=sl)
                errors = [
                    str(v)
                    for v in answer.values()
                    if isinstance(v, ExchangeError) and "already exists" not in str(v)
                ]
                out[trade_id] = "; ".join(errors) or None
            except ExchangeError as exc:
                out[trade_id] = str(exc)[:300]
    return out
