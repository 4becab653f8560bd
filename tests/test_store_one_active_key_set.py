"""Migration 0003 on a store that parallel key uploads left with several active key sets."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from xcoin_trading.config import get_settings, reset_settings


@pytest.fixture(params=["sqlite", "postgres"])
def store_at_0002(request, monkeypatch, master_key_env):
    from xcoin_trading.store.db import alembic_config, dispose_engines

    if request.param == "postgres":
        monkeypatch.setenv("XCOIN_DATABASE_URL", request.getfixturevalue("postgres_url"))
    reset_settings()
    settings = get_settings()
    settings.ensure_dirs()
    command.upgrade(alembic_config(settings.database_url), "0002")
    yield settings
    dispose_engines()


def test_the_newest_set_stays_active_and_subscriptions_follow_it(store_at_0002):
    from xcoin_trading.store.db import alembic_config

    engine = sa.create_engine(store_at_0002.database_url)
    now = "2026-01-01 00:00:00+00"
    with engine.begin() as conn:
        x = lambda sql, **p: conn.execute(sa.text(sql), p)  # noqa: E731
        for uid in (1, 2):
            x("INSERT INTO users (id, email, is_active, created_at, updated_at) VALUES (:i, :e, true, :t, :t)",
              i=uid, e=f"u{uid}@x.io", t=now)  # fmt: skip
        for cid, uid, active in ((1, 1, True), (2, 1, True), (3, 1, True), (4, 2, True), (5, 1, False)):
            x("""INSERT INTO broker_credentials (id, user_id, broker, api_key_encrypted, api_secret_encrypted,
                   key_id, api_key_hint, is_active, connected_at, created_at, updated_at)
                 VALUES (:c, :u, 'coindcx', 'x', 'x', 'k1', '****', :a, :t, :t, :t)""",
              c=cid, u=uid, a=active, t=now)  # fmt: skip
        x("""INSERT INTO strategies (id, name, code, author_id, version, symbol, resolution, lookback, params,
               tags, is_active, is_public, subscriber_count, validation_status, created_at, updated_at)
             VALUES (1, 's', 's', 1, '1', 'BTCUSDT', '5m', 200, '{}', '[]', true, true, 2, 'VALID', :t, :t)""",
          t=now)  # fmt: skip
        for sid, uid, cid in ((1, 1, 1), (2, 2, 4)):
            x("""INSERT INTO subscriptions (id, user_id, strategy_id, broker_credential_id, capital,
                   risk_per_trade, leverage, max_positions, is_active, is_paused, subscribed_at, total_trades,
                   winning_trades, losing_trades, total_pnl, created_at, updated_at)
                 VALUES (:s, :u, 1, :c, 100, 0.01, 1, 1, true, false, :t, 0, 0, 0, 0, :t, :t)""",
              s=sid, u=uid, c=cid, t=now)  # fmt: skip
    command.upgrade(alembic_config(store_at_0002.database_url), "0003")
    with engine.connect() as conn:
        active = conn.execute(
            sa.text("SELECT id FROM broker_credentials WHERE is_active ORDER BY id")
        ).scalars()
        assert list(active) == [3, 4]
        moved = conn.execute(sa.text("SELECT id, broker_credential_id FROM subscriptions ORDER BY id")).all()
        assert [tuple(r) for r in moved] == [(1, 3), (2, 4)]
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("UPDATE broker_credentials SET is_active = true WHERE id = 2"))
    engine.dispose()
