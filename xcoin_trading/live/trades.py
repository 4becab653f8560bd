"""Trade lifecycle in the store: realised P&L from actual fills and fees, and the subscription's
counters moved in the same transaction as the close."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.store.db import among, bulk_json, jsonb_recordset
from xcoin_trading.store.lifecycle import Exit, ExitReason, Leg, TradeStatus
from xcoin_trading.store.models import Subscription, Trade

EXIT_TYPES = tuple(r.value for r in ExitReason)
__all__ = ["EXIT_TYPES", "Exit", "client_order_id", "close_trade", "close_trades", "realised_pnl"]


_LEG_CODES: dict[str, str] = {Leg.ENTRY: "E", Leg.TAKE_PROFIT: "T", Leg.STOP_LOSS: "S", Leg.EXIT: "X"}


def client_order_id(execution_id: int, subscription_id: int, leg: str, trade_id: int | None = None) -> str:
    """Deterministic per (execution, subscription, leg[, trade]): a retry can never mint a new id.

    Exits name the trade they close (one execution may close several). At most 36 characters."""
    code = _LEG_CODES[leg]
    suffix = str(trade_id) if trade_id is not None else ""
    return f"xc-{execution_id}-{subscription_id}-{code}{suffix}"


def realised_pnl(trade: Trade, exit_price: Decimal, exit_fee: Decimal) -> tuple[Decimal, Decimal]:
    """(pnl, pnl_pct): (exit − entry) × qty for LONG, reversed for SHORT, minus both fees.

    pnl_pct is against the margin committed (entry notional / leverage), in percent.
    """
    return _pnl(trade.id, trade.side, trade.entry_price, trade.quantity, trade.entry_fee, trade.leverage,
                exit_price, exit_fee)  # fmt: skip


def _pnl(trade_id: int, side: str, entry_price: Decimal | None, quantity: Decimal, entry_fee: Decimal,
         leverage: Decimal, exit_price: Decimal, exit_fee: Decimal) -> tuple[Decimal, Decimal]:  # fmt: skip
    if entry_price is None:  # set by the entry's first fill: a trade that never filled has no P&L
        raise ValueError(f"trade {trade_id} has no entry price: it never opened, so it cannot be closed")
    direction = 1 if side == "LONG" else -1
    gross = (exit_price - entry_price) * quantity * direction
    pnl = gross - entry_fee - exit_fee
    margin = entry_price * quantity / (leverage or 1)
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
    if trade.status == TradeStatus.CLOSED:
        return trade
    pnl, pnl_pct = realised_pnl(trade, exit_price, exit_fee)
    trade.exit_price = exit_price
    trade.exit_fee = exit_fee
    trade.fees = trade.entry_fee + exit_fee
    trade.pnl, trade.pnl_pct = pnl, pnl_pct
    trade.exit_type, trade.exit_time, trade.status = exit_type, exit_time, TradeStatus.CLOSED
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


_CLOSED_COLUMNS = (
    "id",
    "exit_price",
    "exit_fee",
    "fees",
    "pnl",
    "pnl_pct",
    "exit_type",
    "exit_time",
    "updated_at",
)


def close_trades(session: Session, exits: dict[int, Exit], now: datetime) -> dict[int, Decimal]:
    """Close many trades as `close_trade` closes one; {trade id: pnl} of those closed now (a trade
    already CLOSED, e.g. by the reconciler a moment earlier, is left alone and not counted twice).

    On Postgres one statement closes them all and moves each subscription's counters by addition
    (no read-modify-write, so no row locks held across the batch); elsewhere one close_trade each."""
    if not exits:
        return {}
    if any(e.type not in EXIT_TYPES for e in exits.values()):
        raise ValueError(f"exit_type must be one of {EXIT_TYPES}")
    ids = sorted(exits)
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        out = {}
        for start in range(0, len(ids), 500):
            for trade in session.scalars(
                select(Trade).where(Trade.id.in_(ids[start : start + 500])).order_by(Trade.id)
            ):
                if trade.status != TradeStatus.CLOSED:
                    e = exits[trade.id]
                    close_trade(
                        session, trade, exit_price=e.price, exit_fee=e.fee, exit_type=e.type, exit_time=e.time
                    )
                    out[trade.id] = trade.pnl
        return out
    rows, subscription_ids = [], set()
    for start in range(0, len(ids), 5000):
        for trade_id, subscription_id, side, entry_price, quantity, entry_fee, leverage in session.execute(
            select(Trade.id, Trade.subscription_id, Trade.side, Trade.entry_price, Trade.quantity, Trade.entry_fee,
                   Trade.leverage)
            .where(among(session, Trade.id, ids[start : start + 5000]), Trade.status != TradeStatus.CLOSED)
        ):  # fmt: skip
            subscription_ids.add(subscription_id)
            e = exits[trade_id]
            pnl, pnl_pct = _pnl(trade_id, side, entry_price, quantity, entry_fee, leverage, e.price, e.fee)
            rows.append({"id": trade_id, "exit_price": e.price, "exit_fee": e.fee, "fees": entry_fee + e.fee,
                         "pnl": pnl, "pnl_pct": pnl_pct, "exit_type": e.type, "exit_time": e.time, "updated_at": now})  # fmt: skip
    if not rows:
        return {}
    # The subscriptions first, in id order, as close_trade does: two closers never wait on each other
    # in opposite orders (a deadlock).
    ordered = sorted(subscription_ids)
    for start in range(0, len(ordered), 5000):
        session.execute(
            select(Subscription.id)
            .where(among(session, Subscription.id, ordered[start : start + 5000]))
            .order_by(Subscription.id)
            .with_for_update()
        ).all()
    trades = Trade.metadata.tables[Trade.__tablename__]
    closed = session.execute(
        sa.text(f"""
            WITH v AS (SELECT * FROM {jsonb_recordset(trades, _CLOSED_COLUMNS, dialect)}),
            closed AS (
                UPDATE trades SET exit_price = v.exit_price, exit_fee = v.exit_fee, fees = v.fees, pnl = v.pnl,
                    pnl_pct = v.pnl_pct, exit_type = v.exit_type, exit_time = v.exit_time, status = 'CLOSED',
                    updated_at = v.updated_at
                FROM v WHERE trades.id = v.id AND trades.status <> 'CLOSED'
                RETURNING trades.id, trades.subscription_id, v.pnl
            ),
            counted AS (
                UPDATE subscriptions SET total_trades = total_trades + c.n, winning_trades = winning_trades + c.won,
                    losing_trades = losing_trades + c.n - c.won, total_pnl = total_pnl + c.pnl,
                    updated_at = CAST(:now AS timestamptz)
                FROM (SELECT subscription_id, count(*) AS n, count(*) FILTER (WHERE pnl > 0) AS won,
                             sum(pnl) AS pnl FROM closed GROUP BY subscription_id) AS c
                WHERE subscriptions.id = c.subscription_id
            )
            SELECT id, pnl FROM closed
        """),  # counters as close_trade moves them: a win is pnl > 0, anything else a loss
        {"rows": bulk_json(rows), "now": now},
    ).all()  # fmt: skip
    return {trade_id: pnl for trade_id, pnl in closed}
