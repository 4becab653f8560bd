"""The DuckDB catalog: a small DuckDB file whose `candles` view reads the whole Parquet lake.

DuckDB only reads the lake; the catalog file holds nothing but view definitions. It is rebuilt in a
temporary file and renamed into place, so two refreshes never hold the same DuckDB file for writing
(one writer per DuckDB file) and readers keep a consistent catalog while it is replaced. The view
globs the lake at query time, so new days appear without a refresh; a refresh is needed only when
the lake moves or goes from empty to non-empty.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.marketdata.lake import candles_root

VIEW = "candles"
CATALOG_VERSION = 2  # bump when the views change: an older catalog file is rebuilt
DAYS_VIEW = "candle_days"  # one row per stored day: its source (simulator days flagged), partial flag
_COLUMNS = (
    "symbol VARCHAR, resolution VARCHAR, date DATE, open_time BIGINT, open_ts TIMESTAMP, "
    "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE"
)


@dataclass(frozen=True)
class CatalogInfo:
    path: Path
    lake_glob: str
    files: int


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(lake_glob: str, has_files: bool) -> str:
    if not has_files:  # read_parquet refuses an empty glob at bind time; keep the view's shape
        cols = ", ".join(f"CAST(NULL AS {c.split()[1]}) AS {c.split()[0]}" for c in _COLUMNS.split(", "))
        return f"CREATE OR REPLACE VIEW {VIEW} AS SELECT {cols} WHERE false"
    return f"""
        CREATE OR REPLACE VIEW {VIEW} AS
        SELECT symbol, resolution,
               CAST(regexp_extract(filename, 'date=([0-9-]+)\\.parquet$', 1) AS DATE) AS date,
               open_time, epoch_ms(open_time) AS open_ts,
               open, high, low, close, volume
        FROM read_parquet({_quote(lake_glob)}, hive_partitioning = true, filename = true,
                          hive_types = {{'symbol': VARCHAR, 'resolution': VARCHAR}})
    """


def days_view_sql(lake_glob: str, has_files: bool) -> str:
    """Each day file's own metadata (written beside its candles, so it cannot disagree with them)."""
    if not has_files:
        return (
            f"CREATE OR REPLACE VIEW {DAYS_VIEW} AS SELECT CAST(NULL AS VARCHAR) AS symbol, "
            "CAST(NULL AS VARCHAR) AS resolution, CAST(NULL AS DATE) AS date, CAST(NULL AS VARCHAR) AS source, "
            "CAST(NULL AS BOOLEAN) AS simulated, CAST(NULL AS BOOLEAN) AS partial, "
            "CAST(NULL AS VARCHAR) AS origin WHERE false"
        )
    return rf"""
        CREATE OR REPLACE VIEW {DAYS_VIEW} AS
        WITH kv AS (
            SELECT file_name, decode(key) AS k, decode(value) AS v
            FROM parquet_kv_metadata({_quote(lake_glob)})
        )
        SELECT regexp_extract(file_name, 'symbol=([^/]+)/', 1) AS symbol,
               regexp_extract(file_name, 'resolution=([^/]+)/', 1) AS resolution,
               CAST(regexp_extract(file_name, 'date=([0-9-]+)\.parquet$', 1) AS DATE) AS date,
               coalesce(max(v) FILTER (WHERE k = 'xcoin.source'), 'unknown') AS source,
               coalesce(max(v) FILTER (WHERE k = 'xcoin.source'), '') = 'simulator' AS simulated,
               coalesce(max(v) FILTER (WHERE k = 'xcoin.partial'), 'false') = 'true' AS partial,
               coalesce(max(v) FILTER (WHERE k = 'xcoin.origin'), '') AS origin
        FROM kv GROUP BY file_name
    """


def lake_views(settings: Settings | None = None) -> list[str]:
    """Statements that make the lake's `candles` and `candle_days` views exist as TEMP views on any
    DuckDB connection (e.g. the analytics warehouse's, so `xcoin sql` can join candles and trades)."""
    settings = settings or get_settings()
    root = candles_root(settings)
    lake_glob = str(root / "*" / "*" / "*.parquet")
    has_files = root.exists() and next(root.glob("symbol=*/resolution=*/date=*.parquet"), None) is not None
    return [
        sql.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1)
        for sql in (view_sql(lake_glob, has_files), days_view_sql(lake_glob, has_files))
    ]


def refresh_catalog(settings: Settings | None = None) -> CatalogInfo:
    """(Re)create the catalog file with the `candles` view over the current lake."""
    settings = settings or get_settings()
    root = candles_root(settings)
    lake_glob = str(root / "*" / "*" / "*.parquet")
    files = sum(1 for _ in root.glob("symbol=*/resolution=*/date=*.parquet")) if root.exists() else 0
    path = settings.catalog_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with duckdb.connect(str(tmp)) as con:
            con.execute(view_sql(lake_glob, files > 0))
            con.execute(days_view_sql(lake_glob, files > 0))
            con.execute(
                "CREATE TABLE catalog_info AS SELECT ? AS lake_glob, ? AS empty, ? AS version",
                [lake_glob, files == 0, CATALOG_VERSION],
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return CatalogInfo(path=path, lake_glob=lake_glob, files=files)


def _stale(settings: Settings) -> bool:
    """Missing, built for another lake, or built while the lake was empty and now it is not."""
    if not settings.catalog_path.exists():
        return True
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        try:
            row = con.execute("SELECT lake_glob, empty, version FROM catalog_info").fetchone()
        except duckdb.Error:  # built by an older xcoin: no version, no candle_days view
            return True
    root = candles_root(settings)
    if row is None or row[0] != str(root / "*" / "*" / "*.parquet") or row[2] != CATALOG_VERSION:
        return True
    return bool(row[1]) and next(root.glob("symbol=*/resolution=*/date=*.parquet"), None) is not None


def connect_catalog(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog, rebuilt first if it is missing or stale."""
    settings = settings or get_settings()
    if _stale(settings):
        refresh_catalog(settings)
    return duckdb.connect(str(settings.catalog_path), read_only=True)


def query(sql: str, params: list | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """Run a read-only SQL query against the catalog and return a polars frame."""
    with connect_catalog(settings) as con:
        return con.sql(sql, params=params or None).pl()


def catalog_summary(settings: Settings | None = None) -> pl.DataFrame:
    """Rows, days and time span per symbol × resolution, computed by DuckDB over the lake."""
    return query(
        f"""
        SELECT symbol, resolution, count(DISTINCT date) AS days, count(*) AS rows,
               min(open_ts) AS first_open, max(open_ts) AS last_open
        FROM {VIEW} GROUP BY ALL ORDER BY symbol, resolution
        """,
        settings=settings,
    )


def catalog_gaps(settings: Settings | None = None) -> dict[tuple[str, str], list[tuple[Any, Any, int]]]:
    """Breaks in each symbol × resolution's time grid inside its stored span, in order:
    (last open before the gap, first open after it, candles missing). 1w/1M have no fixed step."""
    from xcoin_trading.timeframes import RESOLUTION_MS

    steps = ", ".join(f"('{r}', {ms})" for r, ms in RESOLUTION_MS.items() if r not in ("1w", "1M"))
    frame = query(
        f"""
        WITH steps(resolution, step) AS (VALUES {steps}),
        t AS (
            SELECT c.symbol, c.resolution, c.open_time, s.step,
                   lag(c.open_time) OVER (PARTITION BY c.symbol, c.resolution ORDER BY c.open_time) AS prev
            FROM {VIEW} c JOIN steps s USING (resolution)
        )
        SELECT symbol, resolution, epoch_ms(prev) AS after, epoch_ms(open_time) AS before,
               CAST((open_time - prev) // step - 1 AS BIGINT) AS missing
        FROM t WHERE open_time - prev > step ORDER BY symbol, resolution, prev
        """,
        settings=settings,
    )
    gaps: dict[tuple[str, str], list[tuple[Any, Any, int]]] = {}
    for r in frame.iter_rows(named=True):
        gaps.setdefault((r["symbol"], r["resolution"]), []).append((r["after"], r["before"], r["missing"]))
    return gaps
