"""Migration 0005: on Postgres the orders/trades status indexes hold only the rows still in play,
and every status query the reconciler and the fan-out run can still use them (a partial index whose
predicate the planner cannot prove from the query would be written and never read)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from xcoin_trading.store.db import get_engine
from xcoin_trading.store.lifecycle import OPEN_TRADE, PENDING, UNRESOLVED, WATCHED, OrderStatus, TradeStatus


def _index_sql(conn, name: str) -> str:
    if conn.dialect.name == "sqlite":
        return conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name}
        ).scalar_one()
    return conn.execute(
        sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": name}
    ).scalar_one()


def _indexes(conn, table: str) -> set[str]:
    return {ix["name"] for ix in sa.inspect(conn).get_indexes(table)}


def test_status_indexes_keep_exactly_the_live_statuses_on_postgres(store):
    with get_engine(store).connect() as conn:
        for name, live in (("ix_orders_status_market", PENDING), ("ix_trades_status_symbol", OPEN_TRADE)):
            where = _index_sql(conn, name).partition("WHERE")[2]
            # SQLite keeps every row: its planner would not use the partial index for a subset query.
            expected = set(live) if conn.dialect.name == "postgresql" else set()
            assert set(re.findall(r"'([A-Z_]+)'", where)) == expected, name
        trade_indexes = _indexes(conn, "trades")
    # The composite indexes that lead with these columns still serve their look-ups.
    assert {"ix_trades_strategy_status", "ix_trades_user_exit_time"} <= trade_indexes
    assert not {"ix_trades_strategy_id", "ix_trades_user_id"} & trade_indexes


ON_POSTGRES = pytest.mark.parametrize("store", ["postgres"], indirect=True)  # only its indexes are partial
ORDER_QUERIES = [  # the status filters the reconciler, run repair, flatten and the fan-out run
    WATCHED,
    UNRESOLVED,
    PENDING,
    (OrderStatus.INTENT,),
    (OrderStatus.SENDING, OrderStatus.UNKNOWN),
]


@ON_POSTGRES
@pytest.mark.parametrize("statuses", ORDER_QUERIES, ids=lambda s: "+".join(s))
def test_postgres_reads_live_orders_through_the_partial_index(store, statuses):
    _uses_index(store, "orders", "status", statuses, "ix_orders_status_market")


@ON_POSTGRES
@pytest.mark.parametrize("statuses", [(TradeStatus.OPEN,), (TradeStatus.PENDING,), OPEN_TRADE], ids=str)
def test_postgres_reads_live_trades_through_the_partial_index(store, statuses):
    _uses_index(store, "trades", "status", statuses, "ix_trades_status_symbol")


def _uses_index(store, table: str, column: str, statuses: tuple[str, ...], index: str) -> None:
    from xcoin_trading.store.models import Base

    model = Base.metadata.tables[table]
    # Compiled as the services compile it: `IN` with bound values (psycopg2 sends them inline).
    query = sa.select(model.c.id).where(model.c[column].in_([str(s) for s in statuses]))
    with get_engine(store).connect() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(
                sa.text("EXPLAIN " + str(query.compile(conn, compile_kwargs={"literal_binds": True})))
            ).scalars()
        )
    assert index in plan, plan
