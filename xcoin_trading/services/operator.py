"""What an operator reads and switches from the command line: every user, strategy, subscription,
open position, order and execution (across tenants: this is the platform operator's view, never
served by the API), and the pause switch for all subscriptions or one strategy's.

Rows are plain dicts of exact values (Decimal, datetime); never a password hash, OAuth id, broker
secret, strategy source or raw exchange reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.store.models import Order, Strategy, StrategyExecution, Subscription, Trade, User
from xcoin_trading.timeframes import utcnow


def _user(u: User) -> dict[str, Any]:
    return {"id": u.id, "email": u.email, "name": u.name, "active": u.is_active,
            "login": "oauth:" + u.oauth_provider if u.oauth_provider else "password", "created": u.created_at}  # fmt: skip


def _strategy(s: Strategy) -> dict[str, Any]:
    return {"id": s.id, "code": s.code, "name": s.name, "author_id": s.author_id, "symbol": s.symbol,
            "resolution": s.resolution, "kind": f"builtin:{s.builtin}" if s.builtin else "uploaded",
            "validation": s.validation_status, "public": s.is_public, "active": s.is_active and s.deleted_at is None,
            "subscribers": s.subscriber_count, "params": s.params, "problems": s.validation_errors or [],
            "created": s.created_at}  # fmt: skip


def _subscription(s: Subscription) -> dict[str, Any]:
    state = "cancelled" if not s.is_active else "paused" if s.is_paused else "active"
    return {"id": s.id, "user": s.user.email, "strategy": s.strategy.code, "state": state, "capital": s.capital,
            "risk_per_trade": s.risk_per_trade, "leverage": s.leverage, "max_positions": s.max_positions,
            "max_daily_loss": s.max_daily_loss, "trades": s.total_trades, "won": s.winning_trades,
            "lost": s.losing_trades, "pnl": s.total_pnl, "subscribed": s.subscribed_at, "paused": s.paused_at}  # fmt: skip


def _trade(t: Trade) -> dict[str, Any]:
    return {"id": t.id, "subscription_id": t.subscription_id, "user_id": t.user_id, "symbol": t.symbol,
            "market": t.market_type, "side": t.side, "status": t.status, "quantity": t.quantity,
            "leverage": t.leverage, "entry_price": t.entry_price, "stop_loss": t.stop_loss,
            "take_profit": t.take_profit, "exit_price": t.exit_price, "exit_type": t.exit_type, "pnl": t.pnl,
            "fees": t.fees, "entry_time": t.entry_time, "exit_time": t.exit_time, "flags": t.flags or []}  # fmt: skip


def _order(o: Order) -> dict[str, Any]:
    return {"id": o.id, "client_order_id": o.client_order_id, "exchange_order_id": o.exchange_order_id,
            "subscription_id": o.subscription_id, "trade_id": o.trade_id, "execution_id": o.execution_id,
            "leg": o.leg, "market": o.market, "side": o.side, "type": o.order_type, "status": o.status,
            "price": o.price, "quantity": o.quantity, "filled": o.filled_quantity, "avg_price": o.avg_price,
            "fee": o.fee, "error": o.error, "updated": o.updated_at}  # fmt: skip


def _execution(e: StrategyExecution) -> dict[str, Any]:
    return {"id": e.id, "strategy": e.strategy.code, "interval_key": e.interval_key, "status": e.status,
            "signal": e.signal, "signal_price": e.signal_price, "subscribers": e.subscribers_count,
            "trades": e.trades_created, "duration_ms": e.duration_ms, "error": e.error,
            "outcomes": (e.details or {}).get("outcomes"), "scheduled": e.scheduled_at, "finished": e.finished_at}  # fmt: skip


@dataclass(frozen=True)
class Kind:
    model: type
    row: Callable[[Any], dict[str, Any]]
    newest: Any  # ORDER BY, newest first


KINDS: dict[str, Kind] = {
    "users": Kind(User, _user, User.id.desc()),
    "strategies": Kind(Strategy, _strategy, Strategy.id.desc()),
    "subscriptions": Kind(Subscription, _subscription, Subscription.id.desc()),
    "positions": Kind(Trade, _trade, Trade.id.desc()),
    "orders": Kind(Order, _order, Order.id.desc()),
    "executions": Kind(StrategyExecution, _execution, StrategyExecution.id.desc()),
}
OPEN_TRADES = ("PENDING", "OPEN")


def _strategy_id(session: Session, code: str) -> int:
    found = session.scalar(sa.select(Strategy.id).where(Strategy.code == code))
    if found is None:
        raise NotFound(f"strategy {code} not found")
    return found


def _user_id(session: Session, email: str) -> int:
    found = session.scalar(sa.select(User.id).where(User.email == email))
    if found is None:
        raise NotFound(f"user {email} not found")
    return found


def list_rows(
    session: Session, kind: str, *, user: str | None = None, strategy: str | None = None,
    status: str | None = None, limit: int = 50,
) -> list[dict[str, Any]]:  # fmt: skip
    """Newest first. `positions` are open trades unless `status` asks for others."""
    if limit < 1:
        raise ValidationError("limit", f"must be at least 1, got {limit}")
    spec = KINDS[kind]
    query = sa.select(spec.model)
    model = spec.model
    if user is not None:
        uid = _user_id(session, user)
        if model is User:
            query = query.where(User.id == uid)
        elif model is Strategy:
            query = query.where(Strategy.author_id == uid)
        elif model is StrategyExecution:
            query = query.where(sa.false())  # executions belong to strategies, not users
        elif model is Order:
            query = query.join(Subscription, Subscription.id == Order.subscription_id).where(
                Subscription.user_id == uid
            )
        else:
            query = query.where(model.user_id == uid)
    if strategy is not None:
        sid = _strategy_id(session, strategy)
        if model is User:
            query = query.where(
                User.id.in_(sa.select(Subscription.user_id).where(Subscription.strategy_id == sid))
            )
        elif model is Strategy:
            query = query.where(Strategy.id == sid)
        elif model is Order:
            query = query.where(
                Order.subscription_id.in_(sa.select(Subscription.id).where(Subscription.strategy_id == sid))
            )
        elif model is Subscription:
            query = query.where(Subscription.strategy_id == sid)
        elif model is Trade:
            query = query.where(Trade.strategy_id == sid)
        elif model is StrategyExecution:
            query = query.where(StrategyExecution.strategy_id == sid)
        else:  # a kind added to KINDS without saying how it belongs to a strategy
            raise ValueError(f"{kind} cannot be filtered by strategy")
    if model is Trade and status is None:
        query = query.where(Trade.status.in_(OPEN_TRADES))
    elif status is not None:
        column = Strategy.validation_status if model is Strategy else getattr(model, "status", None)
        if model is Subscription:
            wanted = status.lower()
            states = {"active": (Subscription.is_active.is_(True) & Subscription.is_paused.is_(False)),
                      "paused": (Subscription.is_active.is_(True) & Subscription.is_paused.is_(True)),
                      "cancelled": Subscription.is_active.is_(False)}  # fmt: skip
            if wanted not in states:
                raise ValidationError("status", f"must be one of {', '.join(states)}, got {status!r}")
            query = query.where(states[wanted])
        elif column is None:
            raise ValidationError("status", f"does not apply to {kind}")
        else:
            query = query.where(column == status.upper())
    rows = session.scalars(query.order_by(spec.newest).limit(limit)).all()
    return [spec.row(r) for r in rows]


def show_row(session: Session, kind: str, ident: str) -> dict[str, Any]:
    """One row by id (or email / strategy code / client order id), with what hangs off it."""
    spec = KINDS[kind]
    model = spec.model
    row = None
    if ident.isdigit():
        row = session.get(model, int(ident))
    elif model is User:
        row = session.scalar(sa.select(User).where(User.email == ident))
    elif model is Strategy:
        row = session.scalar(sa.select(Strategy).where(Strategy.code == ident))
    elif model is Order:
        row = session.scalar(sa.select(Order).where(Order.client_order_id == ident))
    if row is None:
        raise NotFound(f"{kind.rstrip('s') if kind != 'strategies' else 'strategy'} {ident} not found")
    out = spec.row(row)
    if model is Trade:
        out["orders"] = [
            _order(o)
            for o in session.scalars(sa.select(Order).where(Order.trade_id == row.id).order_by(Order.id))
        ]
    elif model is StrategyExecution:
        out["orders"] = [
            _order(o)
            for o in session.scalars(sa.select(Order).where(Order.execution_id == row.id).order_by(Order.id))
        ]
    elif model is Subscription:
        out["open_trades"] = [_trade(t) for t in session.scalars(
            sa.select(Trade).where(Trade.subscription_id == row.id, Trade.status.in_(OPEN_TRADES)).order_by(Trade.id))]  # fmt: skip
    elif model is User:
        out["subscriptions"] = [_subscription(s) for s in session.scalars(
            sa.select(Subscription).where(Subscription.user_id == row.id).order_by(Subscription.id))]  # fmt: skip
    return out


def set_paused(session: Session, paused: bool, strategy: str | None = None) -> list[int]:
    """Pause (or resume) every active subscription, or one strategy's, in one statement; returns the
    ids that changed. The fan-out reads `is_paused` per candle, so the next candle honours it."""
    where: list[sa.ColumnElement[bool]] = [
        Subscription.is_active.is_(True),
        Subscription.is_paused.is_(not paused),
    ]
    if strategy is not None:
        where.append(Subscription.strategy_id == _strategy_id(session, strategy))
    ids = list(session.scalars(sa.select(Subscription.id).where(*where).order_by(Subscription.id)))
    if ids:
        session.execute(
            sa.update(Subscription)
            .where(Subscription.id.in_(ids), Subscription.is_paused.is_(not paused))
            .values(is_paused=paused, paused_at=utcnow() if paused else None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return ids
