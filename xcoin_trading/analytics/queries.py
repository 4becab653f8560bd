"""Ad-hoc SQL on the warehouse (`xcoin sql`): read-only unless the caller allows writes.

Two guards: sqlglot classifies every statement (anything that is not a query is refused without
`allow_write`), and reads run on a DuckDB connection opened read-only, which refuses writes itself.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from xcoin_trading.analytics.warehouse import connect
from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound, ValidationError

_WRITE_NODES = ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Copy", "Attach", "Detach")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    table: Any  # pyarrow.Table
    seconds: float

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def records(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()


def jsonable(value: Any) -> Any:
    """JSON-safe without losing money: Decimals as exact strings, times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _is_read(statement: Any) -> bool:
    from sqlglot import exp

    if isinstance(statement, exp.Command):  # sqlglot's fallback, e.g. EXPLAIN <query>
        name = str(statement.this).upper()
        rest = statement.expression.name if statement.expression else ""
        return name == "EXPLAIN" and not rest.upper().lstrip().startswith("ANALYZE") and _all_reads(rest)
    reads = (exp.Query, exp.Values, exp.Show, exp.Describe, exp.Summarize, exp.Pivot)
    if not isinstance(statement, reads):
        return False
    return not any(type(node).__name__ in _WRITE_NODES for node in statement.walk())


def _all_reads(sql: str) -> bool:
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # EXPLAIN/CALL fall back to Command with a warning
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (ParseError, TokenError):
        return False  # cannot tell what it does: treat it as a write
    return bool(statements) and all(_is_read(s) for s in statements)


def statement_kinds(sql: str) -> list[str]:
    import sqlglot

    try:
        return [type(s).__name__.upper() for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except Exception:
        return ["UNPARSEABLE"]


@contextmanager
def _lake_only():
    """Before the warehouse is built: an in-memory DuckDB that sees only the candle lake."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def run_query(settings: Settings, sql: str, *, allow_write: bool = False) -> QueryResult:
    """Run `sql` (one or more statements; the last one's result is returned)."""
    import duckdb

    if not sql or not sql.strip():
        raise ValidationError("sql", "is empty")
    if not allow_write and not _all_reads(sql):
        kinds = ", ".join(statement_kinds(sql))
        raise ValidationError(
            "sql",
            f"is not read-only ({kinds}); the warehouse is rebuilt from snapshots, pass --write to change it",
        )
    started = time.perf_counter()
    from xcoin_trading.marketdata.catalog import lake_views

    built = allow_write or settings.warehouse_path.exists()
    with connect(settings, write=allow_write) if built else _lake_only() as con:
        for statement in lake_views(settings):  # the candle lake is queryable beside the models
            con.execute(statement)
        try:
            relation = con.sql(sql)  # runs every statement; a relation for a final query
            table = relation.to_arrow_table() if relation is not None else None
            types = [str(t) for t in relation.types] if relation is not None else []
        except duckdb.CatalogException as exc:
            if not built:  # a model or snapshot table before the first build: say how to get them
                raise NotFound(
                    f"the analytics warehouse {settings.warehouse_path} is not built yet: run `xcoin analytics "
                    "build` (the candle lake's `candles` and `candle_days` can be queried already)"
                ) from None
            raise ValidationError("sql", f"failed: {exc}") from None
        except duckdb.Error as exc:
            raise ValidationError("sql", f"failed: {exc}") from None
    import pyarrow as pa

    table = table if table is not None else pa.table({})
    return QueryResult(table.column_names, types, table, time.perf_counter() - started)
