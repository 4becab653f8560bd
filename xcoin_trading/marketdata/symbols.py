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
