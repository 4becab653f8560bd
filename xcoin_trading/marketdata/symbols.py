"""Which markets the platform must keep candles for: the symbols of active strategies."""

from __future__ import annotations

from xcoin_trading.config import Settings, get_settings


def strategy_symbols(settings: Settings | None = None) -> list[str]:
    """Distinct symbols of active strategies in the store, sorted."""
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Strategy

    with session_scope(settings or get_settings()) as session:
        rows = session.scalars(sa.select(Strategy.symbol).where(Strategy.is_active.is_(True)).distinct())
        return sorted(rows)


def live_subscriber_symbols(settings: Settings | None = None) -> list[str]:
    """Symbols of active strategies that have at least one active, unpaused subscription."""
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Strategy, Subscription

    with session_scope(settings or get_settings()) as session:
        rows = session.scalars(
            sa.select(Strategy.symbol)
            .join(Subscription, Subscription.strategy_id == Strategy.id)
            .where(
                Strategy.is_active.is_(True),
                Strategy.deleted_at.is_(None),
                Subscription.is_active.is_(True),
                Subscription.is_paused.is_(False),
            )
            .distinct()
        )
        return sorted(rows)
