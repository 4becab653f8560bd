"""Snapshots copy the store incrementally, exactly, and without secrets, from SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pyarrow.parquet as pq
import sqlalchemy as sa

from tests.fixtures.analytics import seed_trade_book


def test_second_snapshot_copies_only_changed_rows_and_replaces_old_versions(store):
    from xcoin_trading.analytics.snapshot import snapshot_all, snapshot_path, snapshot_table
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Trade
    from xcoin_trading.timeframes import utcnow

    book = seed_trade_book(store, trades_per_subscription=4)
    first = snapshot_all(store)
    assert first["trades"].inserted == first["trades"].total == len(book.trades)
    assert first["orders"].total == len(book.orders)

    open_ids = [t["id"] for t in book.trades if t["status"] == "OPEN"][:2]
    with session_scope(store) as s:
        for trade_id in open_ids:  # the reconciler closes two trades
            trade = s.get(Trade, trade_id)
            trade.status, trade.exit_price, trade.exit_time = (
                "CLOSED",
                Decimal("1.123456789012345678"),
                utcnow(),
            )
            trade.pnl = Decimal("-0.000000000000000001")
        template = {k: v for k, v in book.trades[0].items() if k not in ("id",)}
        s.add(Trade(**template))  # and one new trade arrives

    second = snapshot_table(store, "trades")
    assert (second.inserted, second.updated) == (1, 2)
    assert second.total == len(book.trades) + 1
    assert second.unchanged == second.read - 3  # the overlap window re-reads, but stores nothing new
    quiet = snapshot_table(store, "trades", overlap=timedelta(0))
    assert (quiet.read, quiet.changed) == (0, 0)

    rows = {r["id"]: r for r in pq.read_table(snapshot_path(store, "trades")).to_pylist()}
    assert len(rows) == len(book.trades) + 1  # upserted by id: no duplicate versions
    for trade_id in open_ids:
        assert rows[trade_id]["status"] == "CLOSED"
        assert rows[trade_id]["exit_price"] == Decimal("1.123456789012345678")  # all 18 places, no float
        assert rows[trade_id]["pnl"] == Decimal("-0.000000000000000001")
    with session_scope(store) as s:
        for row in s.execute(sa.select(Trade.id, Trade.quantity, Trade.entry_price, Trade.updated_at)):
            assert rows[row.id]["quantity"] == row.quantity and rows[row.id]["entry_price"] == row.entry_price
            assert rows[row.id]["updated_at"] == row.updated_at


def test_snapshots_hold_no_secret_no_hash_and_no_broker_credentials(store):
    from xcoin_trading.analytics.snapshot import snapshot_all, snapshot_dir, snapshot_path

    seed_trade_book(store, trades_per_subscription=1)
    snapshot_all(store)
    users = pq.read_table(snapshot_path(store, "users"))
    assert {"password_hash", "oauth_id", "oauth_provider"}.isdisjoint(users.column_names)
    assert "email" in users.column_names
    assert not (snapshot_dir(store) / "broker_credentials.parquet").exists()
    for path in snapshot_dir(store).iterdir():
        blob = path.read_bytes()
        assert b"$argon2" not in blob and b"secret-value-xyz" not in blob and b"v1:" not in blob, path.name


def test_rows_changed_after_the_snapshot_instant_wait_for_the_next_run(sqlite_store):
    from xcoin_trading.analytics.snapshot import snapshot_all, snapshot_table
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order
    from xcoin_trading.timeframes import utcnow

    book = seed_trade_book(sqlite_store, trades_per_subscription=1)
    cutoff = utcnow()
    with session_scope(sqlite_store) as s:
        order = s.scalars(sa.select(Order).limit(1)).one()
        order.status = "CANCELLED"
    results = snapshot_all(sqlite_store, until=cutoff)
    assert results["orders"].total == len(book.orders) - 1  # the order changed after the instant waits
    later = snapshot_table(sqlite_store, "orders")
    assert later.inserted == 1


def test_a_snapshot_written_with_an_older_schema_is_copied_again_in_full(sqlite_store):
    from xcoin_trading.analytics.snapshot import snapshot_path, snapshot_table

    book = seed_trade_book(sqlite_store, trades_per_subscription=1)
    snapshot_table(sqlite_store, "orders")
    path = snapshot_path(sqlite_store, "orders")
    pq.write_table(
        pq.read_table(path).drop_columns(["filled_notional"]), path
    )  # as an older release wrote it
    again = snapshot_table(sqlite_store, "orders")
    assert again.full and again.total == len(book.orders)
    table = pq.read_table(path).to_pylist()
    expected = sorted(o["filled"] * o["avg_price"] for o in book.orders if o["avg_price"] is not None)
    assert sorted(r["filled_notional"] for r in table if r["filled_notional"] is not None) == expected
