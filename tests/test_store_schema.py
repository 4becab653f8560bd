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


def _stored_twice_is_refused(store, row) -> None:
    """`row()` commits once, and a second, equal row is refused by a unique constraint."""
    with session_scope(store) as session:
        session.add(row())
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as session:
        session.add(row())


def test_second_execution_of_same_candle_is_rejected_by_the_database(store):
    moment = datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    with session_scope(store) as session:
        sid = _user_and_strategy(session)[1].id
    _stored_twice_is_refused(
        store,
        lambda: StrategyExecution(
            strategy_id=sid, interval_key="2024-01-01T10:05:00Z_5m", scheduled_at=moment, status="RUNNING"
        ),
    )


def test_client_order_id_is_unique(store):
    _stored_twice_is_refused(
        store,
        lambda: Order(
            leg="ENTRY",
            client_order_id="dup",
            market="BTCUSDT",
            side="buy",
            order_type="market_order",
            quantity=Decimal(1),
        ),
    )


def _sending_orders(session, prefix: str, count: int) -> list[int]:
    """`count` market buy intents marked SENDING (client ids `<prefix>-<i>`): their ids, in order."""
    orders = [Order(leg="ENTRY", client_order_id=f"{prefix}-{i}", market="BTCUSDT", side="buy",
                    order_type="market_order", quantity=Decimal(1), status="SENDING") for i in range(count)]  # fmt: skip
    session.add_all(orders)
    session.flush()
    return [o.id for o in orders]


def test_bulk_update_by_id_keeps_money_time_and_json_exact(store):
    """The fan-out records thousands of answers per candle in one UPDATE: nothing may be rounded,
    shifted in time or mixed up between rows on the way."""
    from xcoin_trading.store.db import update_by_id

    with session_scope(store) as session:
        _user_and_strategy(session)
        ids = _sending_orders(session, "b", 3)
    filled_at = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    answers = [
        {"id": ids[0], "status": "FILLED", "avg_price": Decimal("65432.123456789012345678"),
         "filled_quantity": Decimal("0.1") + Decimal("0.2"), "raw_last_response": {"fee": Decimal("1e-18")},
         "updated_at": filled_at},
        {"id": ids[1], "status": "REJECTED", "error": "insufficient funds"},
    ]  # fmt: skip
    with session_scope(store) as session:
        update_by_id(session, Order, answers)
    with session_scope(store) as session:
        got = {o.id: o for o in session.scalars(sa.select(Order))}
    filled, rejected, untouched = got[ids[0]], got[ids[1]], got[ids[2]]
    assert (filled.status, filled.avg_price, filled.filled_quantity) == (
        "FILLED", Decimal("65432.123456789012345678"), Decimal("0.3"),
    )  # fmt: skip
    assert filled.raw_last_response == {"fee": "0.000000000000000001"} and filled.updated_at == filled_at
    assert (rejected.status, rejected.error, rejected.avg_price) == ("REJECTED", "insufficient funds", None)
    assert rejected.updated_at > untouched.updated_at  # stamped by the update
    assert (untouched.status, untouched.error) == ("SENDING", None)
    with pytest.raises(ValueError, match="naive datetime"), session_scope(store) as session:
        update_by_id(session, Order, [{"id": ids[2], "status": "FILLED", "updated_at": datetime(2024, 1, 1)}])


def test_bulk_insert_returns_each_rows_own_id_and_applies_defaults(store):
    """Intents are written all at once and each job must learn its own row's id: a mix-up would send
    one subscriber's order under another's record."""
    from xcoin_trading.store.db import insert_returning_ids

    rows = [
        {"leg": "ENTRY", "client_order_id": f"ins-{i}", "market": "BTCUSDT", "side": "buy" if i % 2 else "sell",
         "order_type": "market_order", "quantity": Decimal(i) / 8, "price": None, "status": "SENDING"}
        for i in (5, 1, 4, 2, 3)
    ]  # fmt: skip
    with session_scope(store) as session:
        ids = insert_returning_ids(session, Order, rows)
    with session_scope(store) as session:
        got = {o.id: o for o in session.scalars(sa.select(Order))}
    assert [got[i].client_order_id for i in ids] == [r["client_order_id"] for r in rows]
    assert [got[i].quantity for i in ids] == [r["quantity"] for r in rows]
    first = got[ids[0]]
    assert (first.filled_quantity, first.fee, first.attempts, first.lookup_misses) == (0, 0, 0, 0)
    assert first.created_at.tzinfo is not None and first.price is None
    mixed = [{**rows[0], "client_order_id": "ins-x"}, {**rows[1], "client_order_id": "ins-y", "error": "e"}]
    with pytest.raises(ValueError, match="same columns"), session_scope(store) as session:
        insert_returning_ids(session, Order, mixed)


@pytest.mark.parametrize(
    "value",
    ["42000.50", "0.000001", "1e-7", "1E+2", "-0.00", "0E-18", "123456789012345678.123456789012345678"],
)
def test_exchange_numbers_are_stored_as_their_plain_digits(value):
    """Answers' Decimals go into jsonb as the digits format(…, "f") writes (never "1E+2"), on the
    fast path (str) and the exponent path alike."""
    import json

    from xcoin_trading.store.db import _dumps, bulk_json

    number = Decimal(value)
    expected = format(number, "f")
    assert json.loads(bulk_json([{"n": number}])) == [{"n": expected}]
    assert json.loads(_dumps({"n": number})) == {"n": expected}


def test_among_selects_exactly_the_rows_of_the_ids_given(store):
    """The fan-out filters thousands of rows by id with one array parameter on Postgres (IN elsewhere)."""
    from xcoin_trading.store.db import among

    with session_scope(store) as session:
        _user_and_strategy(session)
        ids = _sending_orders(session, "a", 5)
        wanted = [ids[3], ids[0], ids[3]]
        assert sorted(session.scalars(sa.select(Order.id).where(among(session, Order.id, wanted)))) == sorted(
            {ids[0], ids[3]}
        )
        by_text = sa.select(Order.client_order_id).where(among(session, Order.client_order_id, ["a-1", "zz"]))
        assert list(session.scalars(by_text)) == ["a-1"]
        assert list(session.scalars(sa.select(Order.id).where(among(session, Order.id, [])))) == []
