"""The schema behaves the same on SQLite and Postgres: exact money, UTC time, the unique guarantees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from xcoin_trading.store.db import get_engine, session_scope
from xcoin_trading.store.models import Base, Order, Strategy, StrategyExecution, User


def _user_and_strategy(session) -> tuple[User, Strategy]:
    user = User(email=f"u{datetime.now().timestamp()}@x.io", password_hash="x")
    session.add(user)
    session.flush()
    strategy = Strategy(
        name="s",
        code=f"s{user.id}",
        author_id=user.id,
        symbol="BTCUSDT",
        resolution="1m",
        builtin="sma_crossover",
    )
    session.add(strategy)
    session.flush()
    return user, strategy


def test_migrations_build_exactly_the_models_schema(store):
    with get_engine(store).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_money_round_trips_exactly_to_18_decimals(store):
    price = Decimal("65432.123456789012345678")
    qty = Decimal("0.1") + Decimal("0.2")  # 0.3 exactly, unlike floats
    with session_scope(store) as session:
        _, strategy = _user_and_strategy(session)
        session.add(Order(leg="ENTRY", client_order_id="c-1", market="BTCUSDT", side="buy",
                          order_type="market_order", price=price, quantity=qty))  # fmt: skip
    with session_scope(store) as session:
        order = session.scalar(sa.select(Order).where(Order.client_order_id == "c-1"))
        assert order.price == price
        assert order.quantity == Decimal("0.3")
        assert isinstance(order.quantity, Decimal)


def test_times_come_back_timezone_aware_utc(store):
    moment = datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    with session_scope(store) as session:
        _, strategy = _user_and_strategy(session)
        session.add(
            StrategyExecution(
                strategy_id=strategy.id, interval_key="k", scheduled_at=moment, status="RUNNING"
            )
        )
    with session_scope(store) as session:
        row = session.scalar(sa.select(StrategyExecution))
        assert row.scheduled_at == moment
        assert row.scheduled_at.tzinfo is not None
        assert row.created_at.tzinfo is not None


def test_naive_datetime_is_refused(store):
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session_scope(store) as session:
        _, strategy = _user_and_strategy(session)
        session.add(
            StrategyExecution(
                strategy_id=strategy.id, interval_key="k", scheduled_at=datetime(2024, 1, 1), status="RUNNING"
            )
        )
        session.flush()


def test_second_execution_of_same_candle_is_rejected_by_the_database(store):
    moment = datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    with session_scope(store) as session:
        _, strategy = _user_and_strategy(session)
        sid = strategy.id
        session.add(
            StrategyExecution(
                strategy_id=sid, interval_key="2024-01-01T10:05:00Z_5m", scheduled_at=moment, status="RUNNING"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as session:
        session.add(
            StrategyExecution(
                strategy_id=sid, interval_key="2024-01-01T10:05:00Z_5m", scheduled_at=moment, status="RUNNING"
            )
        )


def test_client_order_id_is_unique(store):
    with session_scope(store) as session:
        session.add(
            Order(
                leg="ENTRY",
                client_order_id="dup",
                market="BTCUSDT",
                side="buy",
                order_type="market_order",
                quantity=Decimal(1),
            )
        )
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as session:
        session.add(
            Order(
                leg="ENTRY",
                client_order_id="dup",
                market="BTCUSDT",
                side="buy",
                order_type="market_order",
                quantity=Decimal(1),
            )
        )
