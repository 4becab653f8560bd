"""Subscriptions with the seed's rules: the strategy must exist and be active, one active subscription
per (user, strategy), pause only if active and not paused, resume only if paused, cancel is soft.

Every rule holds under parallel requests: subscribe locks the user row, then the strategy row
(delete and edits of the strategy lock it too); cancel, pause and resume are conditional UPDATEs
(`WHERE is_active …`), so of parallel calls exactly one changes the row; `subscriber_count` is
recounted from the rows in the same transaction, under the strategy lock."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from xcoin_trading.config import get_settings
from xcoin_trading.errors import Conflict, ValidationError
from xcoin_trading.exchange.markets import FUTURES_MARKETS
from xcoin_trading.services import validate
from xcoin_trading.services.credentials import active_credential, get_credential
from xcoin_trading.services.strategies import locked_visible_strategy
from xcoin_trading.services.users import lock_user
from xcoin_trading.store.db import owned_row
from xcoin_trading.store.models import Strategy, Subscription
from xcoin_trading.timeframes import utcnow

MAX_POSITIONS = 100


def _check_terms(terms: dict[str, Any], max_leverage: Decimal) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "capital" in terms:
        out["capital"] = validate.positive("capital", terms["capital"])
    if "risk_per_trade" in terms:
        out["risk_per_trade"] = validate.in_range(
            "risk_per_trade", terms["risk_per_trade"], Decimal(0), Decimal(1)
        )
    if "leverage" in terms:
        out["leverage"] = validate.in_range("leverage", terms["leverage"], Decimal(0), max_leverage)
    if "max_positions" in terms:
        out["max_positions"] = validate.positive_int("max_positions", terms["max_positions"], MAX_POSITIONS)
    for name in ("max_daily_loss", "sl_atr_multiplier", "tp_atr_multiplier"):
        if name in terms:
            out[name] = None if terms[name] is None else validate.positive(name, terms[name])
    return out


def _one_futures_position_per_pair(
    session: Session, user_id: int, strategy: Strategy, max_positions: int
) -> None:
    """The exchange nets everything on one futures pair into a single position per account: two open
    xcoin trades there could not be told apart, so each user trades a futures pair through one
    subscription holding at most one position."""
    if strategy.symbol not in FUTURES_MARKETS:
        return
    if max_positions != 1:
        raise ValidationError(
            "max_positions",
            f"must be 1 on futures ({strategy.symbol} positions are netted), got {max_positions}",
        )
    other = session.scalar(
        select(Strategy.code)
        .join(Subscription, Subscription.strategy_id == Strategy.id)
        .where(Subscription.user_id == user_id, Subscription.is_active.is_(True), Strategy.symbol == strategy.symbol,
               Strategy.id != strategy.id)
    )  # fmt: skip
    if other is not None:
        raise Conflict(
            f"you already trade {strategy.symbol} futures through strategy {other!r}: one per pair"
        )


def _lock_strategy_row(session: Session, strategy_id: int) -> None:
    session.execute(select(Strategy.id).where(Strategy.id == strategy_id).with_for_update())


def _recount(session: Session, strategy_id: int) -> None:
    """`subscriber_count` := the active rows, in one statement (the caller holds the strategy lock)."""
    active = (
        select(func.count())
        .select_from(Subscription)
        .where(Subscription.strategy_id == strategy_id, Subscription.is_active.is_(True))
        .scalar_subquery()
    )
    session.execute(
        update(Strategy)
        .where(Strategy.id == strategy_id)
        .values(subscriber_count=active, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    strategy = session.identity_map.get(session.identity_key(Strategy, strategy_id))
    if strategy is not None:  # a loaded copy must not show the old count
        session.expire(strategy, ["subscriber_count", "updated_at"])


def _set_where(session: Session, user_id: int, subscription_id: int, condition, **values: Any) -> bool:
    """UPDATE the subscription only if `condition` still holds; True if it did (exactly one winner)."""
    changed = session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id, Subscription.user_id == user_id, condition)
        .values(**values, updated_at=utcnow())
        .returning(Subscription.id)
        .execution_options(synchronize_session=False)
    ).first()
    return changed is not None


def subscribe(
    session: Session,
    user_id: int,
    strategy_id: int,
    *,
    capital: Any,
    risk_per_trade: Any,
    leverage: Any = 1,
    max_positions: int = 1,
    max_daily_loss: Any = None,
    sl_atr_multiplier: Any = None,
    tp_atr_multiplier: Any = None,
    broker_credential_id: int | None = None,
) -> Subscription:
    terms = _check_terms(
        dict(
            capital=capital, risk_per_trade=risk_per_trade, leverage=leverage, max_positions=max_positions,
            max_daily_loss=max_daily_loss, sl_atr_multiplier=sl_atr_multiplier,
            tp_atr_multiplier=tp_atr_multiplier,
        ),
        get_settings().max_leverage,
    )  # fmt: skip
    lock_user(session, user_id)
    strategy = locked_visible_strategy(session, user_id, strategy_id)
    if not strategy.is_active:
        raise ValidationError("strategy_id", f"strategy {strategy.code!r} is not active")
    if strategy.validation_status == "INVALID":
        reasons = "; ".join(strategy.validation_errors or [])
        raise ValidationError("strategy_id", f"strategy {strategy.code!r} failed validation: {reasons}")
    if broker_credential_id is not None:
        credential = get_credential(session, user_id, broker_credential_id)
        if not credential.is_active:
            raise ValidationError(
                "broker_credential_id", f"broker credential {broker_credential_id} is revoked"
            )
    else:
        credential = active_credential(session, user_id)
    _one_futures_position_per_pair(session, user_id, strategy, terms.get("max_positions", 1))
    duplicate = session.scalar(
        select(Subscription.id).where(
            Subscription.user_id == user_id,
            Subscription.strategy_id == strategy_id,
            Subscription.is_active.is_(True),
        )
    )
    if duplicate is not None:
        raise Conflict(f"already subscribed to strategy {strategy.code!r} (subscription {duplicate})")
    subscription = Subscription(
        user_id=user_id, strategy_id=strategy_id, broker_credential_id=credential.id, **terms
    )
    try:
        with session.begin_nested():  # added inside: a clash rolls back only this insert
            session.add(subscription)
            session.flush()
    except IntegrityError:  # a write that skipped the locks (CLI, another tool) won the unique index
        raise Conflict(f"already subscribed to strategy {strategy.code!r}") from None
    _recount(session, strategy_id)
    return subscription


def get_subscription(session: Session, user_id: int, subscription_id: int) -> Subscription:
    return owned_row(session, Subscription, subscription_id, user_id, "subscription")


def _active(session: Session, user_id: int, subscription_id: int) -> Subscription:
    """The caller's subscription, locked and read fresh; Conflict if it is cancelled."""
    subscription = owned_row(session, Subscription, subscription_id, user_id, "subscription", lock=True)
    if not subscription.is_active:
        raise Conflict(f"subscription {subscription_id} is cancelled")
    return subscription


def _refused(session: Session, user_id: int, subscription_id: int, state: str) -> Conflict:
    """Why a conditional change matched no row: not found, cancelled, or already in `state`."""
    subscription = get_subscription(session, user_id, subscription_id)
    session.refresh(subscription)
    if not subscription.is_active:
        return Conflict(f"subscription {subscription_id} is cancelled")
    return Conflict(f"subscription {subscription_id} is {state}")


def list_subscriptions(session: Session, user_id: int, include_cancelled: bool = False) -> list[Subscription]:
    query = select(Subscription).where(Subscription.user_id == user_id)
    if not include_cancelled:
        query = query.where(Subscription.is_active.is_(True))
    return list(session.scalars(query.order_by(Subscription.id)).all())


def _changed(session: Session, user_id: int, subscription_id: int) -> Subscription:
    subscription = get_subscription(session, user_id, subscription_id)
    session.refresh(subscription)
    return subscription


def pause(session: Session, user_id: int, subscription_id: int) -> Subscription:
    get_subscription(session, user_id, subscription_id)
    active_unpaused = Subscription.is_active.is_(True) & Subscription.is_paused.is_(False)
    if not _set_where(session, user_id, subscription_id, active_unpaused, is_paused=True, paused_at=utcnow()):
        raise _refused(session, user_id, subscription_id, "already paused")
    return _changed(session, user_id, subscription_id)


def resume(session: Session, user_id: int, subscription_id: int) -> Subscription:
    get_subscription(session, user_id, subscription_id)
    active_paused = Subscription.is_active.is_(True) & Subscription.is_paused.is_(True)
    if not _set_where(session, user_id, subscription_id, active_paused, is_paused=False, paused_at=None):
        raise _refused(session, user_id, subscription_id, "not paused")
    return _changed(session, user_id, subscription_id)


def cancel(session: Session, user_id: int, subscription_id: int) -> Subscription:
    strategy_id = get_subscription(session, user_id, subscription_id).strategy_id
    _lock_strategy_row(session, strategy_id)  # strategy before subscription, as subscribe does
    active = Subscription.is_active.is_(True)
    if not _set_where(session, user_id, subscription_id, active, is_active=False, unsubscribed_at=utcnow()):
        raise _refused(session, user_id, subscription_id, "cancelled")
    _recount(session, strategy_id)
    return _changed(session, user_id, subscription_id)


def update_terms(session: Session, user_id: int, subscription_id: int, **changes: Any) -> Subscription:
    subscription = _active(session, user_id, subscription_id)
    allowed = {"capital", "risk_per_trade", "leverage", "max_positions", "max_daily_loss",
               "sl_atr_multiplier", "tp_atr_multiplier"}  # fmt: skip
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError(sorted(unknown)[0], "cannot be changed on a subscription")
    terms = _check_terms(changes, get_settings().max_leverage)
    if (
        "max_positions" in terms
        and subscription.strategy.symbol in FUTURES_MARKETS
        and terms["max_positions"] != 1
    ):
        raise ValidationError(
            "max_positions", f"must be 1 on futures ({subscription.strategy.symbol} positions are netted)"
        )
    for key, value in terms.items():
        setattr(subscription, key, value)
    return subscription


def stats(session: Session, user_id: int, subscription_id: int) -> dict[str, Any]:
    s = get_subscription(session, user_id, subscription_id)
    win_rate = (Decimal(s.winning_trades) / s.total_trades * 100) if s.total_trades else Decimal(0)
    return {
        "subscriptionId": s.id,
        "strategyId": s.strategy_id,
        "totalTrades": s.total_trades,
        "winningTrades": s.winning_trades,
        "losingTrades": s.losing_trades,
        "winRate": float(round(win_rate, 2)),
        "totalPnl": str(s.total_pnl),
        "capital": str(s.capital),
        "isActive": s.is_active,
        "isPaused": s.is_paused,
    }
