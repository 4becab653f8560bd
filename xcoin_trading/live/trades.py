"""Trade lifecycle in the store: realised P&L from actual fills and fees, and the subscription's
counters moved in the same transaction as the close."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.store.models import Subscription, Trade

EXIT_TYPES = ("TAKE_PROFIT", "STOP_LOSS", "SIGNAL", "LIQUIDATION", "MANUAL", "END")


def client_order_id(execution_id: int, subscription_id: int, leg: str, trade_id: int | None = None) -> str:
    """Deterministic per (execution, subscription, leg[, trade]): a retry can never mint a new id.

    Exits name the trade they close (one execution may close several). At most 36 characters."""
    code = {"ENTRY": "E", "TAKE_PROFIT": "T", "STOP_LOSS": "S", "EXIT": "X"}[leg]
    suffix = str(trade_id) if trade_id is not None else ""
    return f"xc-{execution_id}-{subscription_id}-{code}{suffix}"


def realised_pnl(trade: Trade, exit_price: Decimal, exit_fee: Decimal) -> tuple[Decimal, Decimal]:
    """(pnl, pnl_pct): (exit − entry) × qty for LONG, reversed for SHORT, minus both fees.

    pnl_pct is against the margin committed (entry notional / leverage), in percent.
    """
    direction = 1 if trade.side == "LONG" else -1
    gross = (exit_price - trade.entry_price) * trade.quantity * direction
    pnl = gross - trade.entry_fee - exit_fee
    margin = trade.entry_price * trade.quantity / (trade.leverage or 1)
    pnl_pct = (pnl / margin * 100) if margin else Decimal(0)
    return pnl, pnl_pct.quantize(Decimal("0.0001"))


def close_trade(
    session: Session,
    trade: Trade,
    *,
    exit_price: Decimal,
    exit_fee: Decimal,
    exit_type: str,
    exit_time: datetime,
    subscription: Subscription | None = None,
) -> Trade:
    """`subscription`: the trade's subscription already locked (FOR UPDATE) by the caller."""
    if exit_type not in EXIT_TYPES:
        raise ValueError(f"exit_type must be one of {EXIT_TYPES}, got {exit_type!r}")
    if trade.status == "CLOSED":
        return trade
    pnl, pnl_pct = realised_pnl(trade, exit_price, exit_fee)
    trade.exit_price = exit_price
    trade.exit_fee = exit_fee
    trade.fees = trade.entry_fee + exit_fee
    trade.pnl, trade.pnl_pct = pnl, pnl_pct
    trade.exit_type, trade.exit_time, trade.status = exit_type, exit_time, "CLOSED"
    # Row lock on Postgres; SQLite serialises writers. Python arithmetic keeps Decimal exact on both.
    sub = subscription
    if sub is None or sub.id != trade.subscription_id:
        sub = session.scalars(
            select(Subscription).where(Subscription.id == trade.subscription_id).with_for_update()
        ).one()
    sub.total_trades += 1
    sub.winning_trades += 1 if pnl > 0 else 0
    sub.losing_trades += 0 if pnl > 0 else 1
    sub.total_pnl = sub.total_pnl + pnl
    return trade
