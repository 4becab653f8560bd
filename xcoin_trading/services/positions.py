"""A user's live positions and order history, read straight from the store (current, per user,
paginated). Aggregates over history come from the analytics warehouse instead."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import TypedDict

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.exchange.markets import FUTURES_MARKETS, SPOT_MARKETS
from xcoin_trading.store.lifecycle import PENDING, OrderStatus, TradeStatus
from xcoin_trading.store.models import Order, Strategy, Subscription, Trade

ORDER_STATUSES = tuple(s.value for s in OrderStatus)
PENDING_STATUSES = PENDING
MAX_PAGE_SIZE = 100
# Products of two NUMERIC(38, 18) amounts have up to 76 digits: computed exactly, not at the
# default context's 28 significant digits.
EXACT_DIGITS = 100
STORE_PLACES = Decimal("1e-18")
ALL_SYMBOLS = (*SPOT_MARKETS, *FUTURES_MARKETS)


@dataclass(frozen=True)
class Position:
    trade: Trade
    strategy_name: str
    current_price: Decimal | None
    unrealized_pnl: Decimal | None  # (price − entry) × qty (reversed for SHORT) − entry fee paid
    unrealized_pnl_pct: Decimal | None  # of the notional (entry × qty), 4 places, as analytics does

    @property
    def notional(self) -> Decimal:
        entry_price = self.trade.entry_price
        if entry_price is None:  # open_trades reads only trades with an entry fill
            raise ValueError(f"trade {self.trade.id} has no entry price: not an open position")
        with localcontext(prec=EXACT_DIGITS):
            return entry_price * self.trade.quantity

    @property
    def margin(self) -> Decimal:
        with localcontext(prec=EXACT_DIGITS):
            return (self.notional / (self.trade.leverage or Decimal(1))).quantize(STORE_PLACES)


def price_key(symbol: str) -> str:
    """The spot ticker market that prices `symbol` (futures pairs are marked at the spot price)."""
    if symbol in SPOT_MARKETS:
        return symbol
    try:
        market = default_market(symbol)
    except ValidationError:
        return symbol
    return f"{market.target}{market.base}"


def open_trades(session: Session, user_id: int) -> list[tuple[Trade, str]]:
    rows = session.execute(
        select(Trade, Strategy.name)
        .join(Strategy, Strategy.id == Trade.strategy_id)
        .where(Trade.user_id == user_id, Trade.status == TradeStatus.OPEN, Trade.entry_price.is_not(None))
        .order_by(Trade.entry_time, Trade.id)
    ).all()
    return [(trade, name) for trade, name in rows]


def current_positions(session: Session, user_id: int, prices: Mapping[str, Decimal] | None) -> list[Position]:
    """Open trades, marked to `prices` (spot symbol → last price) when given."""
    positions = []
    for trade, name in open_trades(session, user_id):
        price = None if prices is None else prices.get(price_key(trade.symbol))
        entry_price = trade.entry_price  # always set: open_trades reads only trades with an entry fill
        pnl = pct = None
        if price is not None and entry_price is not None:
            try:
                with localcontext(prec=EXACT_DIGITS):
                    direction = 1 if trade.side == "LONG" else -1
                    pnl = direction * (price - entry_price) * trade.quantity - trade.entry_fee
                    notional = entry_price * trade.quantity
                    pct = round(pnl * 100 / notional, 4) if notional else None
            except ArithmeticError:  # an unreadable stored amount: that position's P&L is unknown
                pnl = pct = None
        positions.append(Position(trade, name, price, pnl, pct))
    return positions


class OrdersSummary(TypedDict):
    total_orders: int
    filled_orders: int
    pending_orders: int
    cancelled_orders: int
    rejected_orders: int
    total_volume: Decimal
    total_fees: Decimal


@dataclass(frozen=True)
class OrdersPage:
    rows: list[tuple[Order, int | None]]  # order and its strategy id
    total: int  # matching the status filter
    summary: OrdersSummary  # over all of the user's orders


def _user_orders():
    return select(Order, Subscription.strategy_id).join(
        Subscription, Subscription.id == Order.subscription_id
    )


def _money_sums(session: Session, mine) -> tuple[Decimal, Decimal]:
    """Traded volume and fees, exactly: NUMERIC sums on Postgres; on SQLite (decimals kept as text,
    where SUM would go through floats) summed here."""
    joined = (
        select().select_from(Order).join(Subscription, Subscription.id == Order.subscription_id).where(mine)
    )
    if session.get_bind().dialect.name != "sqlite":
        volume, fees = session.execute(
            joined.add_columns(
                func.coalesce(func.sum(Order.filled_quantity * Order.avg_price), 0),
                func.coalesce(func.sum(Order.fee), 0),
            )
        ).one()
        return Decimal(volume), Decimal(fees)
    volume = fees = Decimal(0)
    for filled, avg, fee in session.execute(
        joined.add_columns(Order.filled_quantity, Order.avg_price, Order.fee)
    ):
        if avg is not None:
            volume += filled * avg
        fees += fee
    return volume, fees


def orders_page(
    session: Session, user_id: int, page: int = 1, limit: int = 20, status: str | None = None
) -> OrdersPage:
    if page < 1:
        raise ValidationError("page", f"must be at least 1, got {page}")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError("limit", f"must be in [1, {MAX_PAGE_SIZE}], got {limit}")
    if status is not None and status.upper() not in ORDER_STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(ORDER_STATUSES)}, got {status!r}")
    mine = Subscription.user_id == user_id
    query = _user_orders().where(mine)
    if status is not None:
        query = query.where(Order.status == status.upper())
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.execute(
        query.order_by(Order.created_at.desc(), Order.id.desc()).offset((page - 1) * limit).limit(limit)
    ).all()
    summary_row = session.execute(
        select(
            func.count(Order.id),
            func.sum(case((Order.status == OrderStatus.FILLED, 1), else_=0)),
            func.sum(case((Order.status.in_(PENDING_STATUSES), 1), else_=0)),
            func.sum(case((Order.status == OrderStatus.CANCELLED, 1), else_=0)),
            func.sum(case((Order.status == OrderStatus.REJECTED, 1), else_=0)),
        )
        .select_from(Order)
        .join(Subscription, Subscription.id == Order.subscription_id)
        .where(mine)
    ).one()
    volume, fees = _money_sums(session, mine)
    count, filled_n, pending_n, cancelled_n, rejected_n = (int(v or 0) for v in summary_row)
    return OrdersPage(
        rows=[(o, sid) for o, sid in rows],
        total=int(total or 0),
        summary={
            "total_orders": count,
            "filled_orders": filled_n,
            "pending_orders": pending_n,
            "cancelled_orders": cancelled_n,
            "rejected_orders": rejected_n,
            "total_volume": volume,
            "total_fees": fees,
        },
    )
