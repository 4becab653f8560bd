"""Copy the OLTP tables into Parquet so analytics never load the trading database.

Incremental rules, the overlap window and what is never copied: docs/analytics.md ("Snapshots").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from xcoin_trading.config import Settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.timeframes import utcnow

if TYPE_CHECKING:
    import duckdb

SNAPSHOT_TABLES: tuple[str, ...] = (
    "users",
    "strategies",
    "subscriptions",
    "strategy_executions",
    "orders",
    "trades",
    "backtest_results",
)
EXCLUDED_COLUMNS: dict[str, frozenset[str]] = {
    "users": frozenset({"password_hash", "oauth_provider", "oauth_id"}),
    "strategies": frozenset({"source"}),
    "orders": frozenset({"raw_last_response"}),
}
# Computed while copying, exactly in Decimal (rounded half-even at 1e-18): DuckDB cannot multiply two
# DECIMAL(38,18) without overflow, and casting every row down first made the volume model 100x slower.
DERIVED_PRODUCTS: dict[str, dict[str, tuple[str, str]]] = {
    "orders": {"filled_notional": ("filled_quantity", "avg_price")},
}
SECRET_LIKE = re.compile(r"password|secret|encrypted|token|hash|api_key|oauth_id", re.IGNORECASE)
DEFAULT_OVERLAP = timedelta(minutes=5)
CHUNK_ROWS = 20_000
ATTO = Decimal("1e-18")


@dataclass(frozen=True)
class SnapshotResult:
    table: str
    read: int  # rows read from the store this run
    inserted: int  # new primary keys
    updated: int  # rows whose stored version changed
    unchanged: int  # re-read by the overlap window, identical to what was stored
    total: int  # rows in the snapshot afterwards
    watermark: datetime | None
    path: Path
    full: bool

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


def snapshot_dir(settings: Settings) -> Path:
    return settings.lake_dir / "snapshots"


def snapshot_path(settings: Settings, table: str) -> Path:
    return snapshot_dir(settings) / f"{table}.parquet"


def _table(table: str) -> sa.Table:
    from xcoin_trading.store.models import Base

    if table not in SNAPSHOT_TABLES:
        raise ValidationError("table", f"must be one of {', '.join(SNAPSHOT_TABLES)}, got {table!r}")
    return Base.metadata.tables[table]


def snapshot_columns(table: str) -> list[sa.Column]:
    """The columns copied for `table`: everything except the excluded and secret-looking ones."""
    excluded = EXCLUDED_COLUMNS.get(table, frozenset())
    return [c for c in _table(table).columns if c.name not in excluded and not SECRET_LIKE.search(c.name)]


def _arrow_type(column: sa.Column):
    import pyarrow as pa

    from xcoin_trading.store.types import UTCDateTime

    kind = column.type
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return pa.decimal128(38, 18)
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    return pa.string()  # String, Text, JSON (as JSON text)


def arrow_schema(table: str):
    import pyarrow as pa

    fields = [pa.field(c.name, _arrow_type(c), nullable=c.nullable) for c in snapshot_columns(table)]
    fields += [pa.field(name, pa.decimal128(38, 18)) for name in DERIVED_PRODUCTS.get(table, {})]
    return pa.schema(fields)


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, ...]:
    """The one row of an aggregate query (DuckDB answers None only for a query without rows)."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {sql!r}")
    return tuple(row)


def _to_arrow(table: str, columns: list[sa.Column], rows: Sequence[Any], schema):
    import pyarrow as pa

    arrays = []
    for i, column in enumerate(columns):
        values = [row[i] for row in rows]
        if isinstance(column.type, sa.JSON):
            values = [None if v is None else json.dumps(v, default=str, sort_keys=True) for v in values]
        try:
            arrays.append(pa.array(values, type=schema.field(column.name).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. more than 18 decimals: refuse, never round
            raise ValidationError(f"{table}.{column.name}", f"cannot be copied exactly: {exc}") from None
    position = {c.name: i for i, c in enumerate(columns)}
    for name, (left, right) in DERIVED_PRODUCTS.get(table, {}).items():
        values = []
        for row in rows:
            a, b = row[position[left]], row[position[right]]
            values.append(None if a is None or b is None else (a * b).quantize(ATTO, ROUND_HALF_EVEN))
        arrays.append(pa.array(values, type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _shape(schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema]  # names and types; DuckDB drops NOT NULL on rewrite


def _state_path(settings: Settings) -> Path:
    return snapshot_dir(settings) / "_watermarks.json"


def _load_state(settings: Settings) -> dict[str, str]:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(settings: Settings, table: str, watermark: datetime | None) -> None:
    state = _load_state(settings)
    if watermark is None:
        state.pop(table, None)
    else:
        state[table] = watermark.isoformat()
    tmp = _state_path(settings).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, _state_path(settings))


def watermark(settings: Settings, table: str) -> datetime | None:
    value = _load_state(settings).get(table)
    return datetime.fromisoformat(value) if value else None


def _read_changes(
    settings: Settings, table: str, since: datetime | None, until: datetime | None, out: Path
) -> tuple[int, datetime | None]:
    """Stream rows with since < updated_at <= until into a Parquet file; returns (rows, max updated_at)."""
    import pyarrow.parquet as pq

    from xcoin_trading.store.db import get_engine

    columns = snapshot_columns(table)
    schema = arrow_schema(table)
    source = _table(table)
    query = sa.select(*columns).order_by(source.c.updated_at, source.c.id)
    if since is not None:
        query = query.where(source.c.updated_at > since)
    if until is not None:
        query = query.where(source.c.updated_at <= until)
    rows_read, newest = 0, None
    with (
        get_engine(settings).connect() as conn,
        pq.ParquetWriter(out, schema, compression="zstd") as writer,
    ):
        result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
        for chunk in result.partitions(CHUNK_ROWS):
            batch = _to_arrow(table, columns, chunk, schema)
            writer.write_table(batch)
            rows_read += batch.num_rows
            newest = chunk[-1][[c.name for c in columns].index("updated_at")]
    return rows_read, newest


def snapshot_table(
    settings: Settings,
    table: str,
    *,
    full: bool = False,
    until: datetime | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> SnapshotResult:
    """Bring `<lake>/snapshots/<table>.parquet` up to date with the store, as of `until` (default now).

    Give every table of one refresh the same `until`, so the snapshots agree with each other (an
    order copied later than the trades would otherwise point at a trade the snapshot lacks).
    """
    import duckdb
    import pyarrow.parquet as pq
    from filelock import FileLock

    _table(table)
    folder = snapshot_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    final = snapshot_path(settings, table)
    with FileLock(str(folder / f".{table}.lock")):
        # a stored file with another schema (a column added since) is copied again in full
        same_schema = final.exists() and _shape(pq.read_schema(final)) == _shape(arrow_schema(table))
        previous = watermark(settings, table) if same_schema and not full else None
        since = None if previous is None else previous - overlap
        delta = folder / f".{table}.delta.parquet"
        merged = folder / f".{table}.merged.parquet"
        read, newest = _read_changes(settings, table, since, until, delta)
        try:
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            if previous is None:  # first or full run: the delta is the snapshot
                inserted, updated, unchanged = read, 0, 0
                os.replace(delta, final)
            else:
                old, new = f"read_parquet('{final}')", f"read_parquet('{delta}')"
                inserted, updated, unchanged = _counts(
                    con,
                    f"""SELECT count(*) FILTER (WHERE o.id IS NULL),
                               count(*) FILTER (WHERE o.id IS NOT NULL AND o.updated_at <> d.updated_at),
                               count(*) FILTER (WHERE o.updated_at = d.updated_at)
                        FROM {new} d LEFT JOIN {old} o USING (id)""",
                )
                if inserted or updated:
                    con.execute(
                        f"""COPY (SELECT * FROM (SELECT o.* FROM {old} o ANTI JOIN {new} d USING (id)
                                                 UNION ALL BY NAME SELECT * FROM {new}) ORDER BY id)
                            TO '{merged}' (FORMAT parquet, COMPRESSION zstd)"""
                    )
                    os.replace(merged, final)
            (total,) = _counts(con, f"SELECT count(*) FROM read_parquet('{final}')")
            con.close()
        finally:
            for leftover in (delta, merged):
                leftover.unlink(missing_ok=True)
        newest = max(filter(None, (previous, newest)), default=None)
        _save_state(settings, table, newest)
    return SnapshotResult(table, read, inserted, updated, unchanged, total, newest, final, previous is None)


def snapshot_all(
    settings: Settings, *, full: bool = False, until: datetime | None = None
) -> dict[str, SnapshotResult]:
    """Every table as of one instant (`until`, default now)."""
    until = until or utcnow()
    return {table: snapshot_table(settings, table, full=full, until=until) for table in SNAPSHOT_TABLES}
