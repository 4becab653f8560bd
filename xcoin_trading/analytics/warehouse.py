"""The DuckDB warehouse: snapshot tables as views over their Parquet files, models as tables.

DuckDB allows one read-write process per file (or many read-only ones), so every connection goes
through a cross-process read-write lock next to the file: builds take it exclusively, queries share
it. Opening still retries for a while in case a process outside xcoin (the duckdb shell) holds the file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from xcoin_trading.analytics.models import ModelError, Project, load_project
from xcoin_trading.analytics.snapshot import SNAPSHOT_TABLES, arrow_schema, snapshot_dir, snapshot_path
from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound

LOCK_TIMEOUT_S = 300.0
BUILDS_TABLE = "_xcoin_builds"


@contextmanager
def connect(settings: Settings, *, write: bool = False, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Any]:
    """A DuckDB connection to the warehouse in UTC; read-only unless `write`."""
    import duckdb
    from filelock import ReadWriteLock

    path = settings.warehouse_path
    if not write and not path.exists():
        raise NotFound(f"the analytics warehouse {path} is not built yet: run `xcoin analytics build`")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = ReadWriteLock(f"{path}.rwlock", timeout=timeout, is_singleton=False)
    with lock.write_lock() if write else lock.read_lock():
        deadline = time.monotonic() + timeout
        while True:
            try:
                con = duckdb.connect(str(path), read_only=not write)
                break
            except duckdb.IOException:  # held by a process that does not use our lock
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            con.execute("SET TimeZone = 'UTC'")  # DATE(timestamptz) and date_trunc follow the session zone
            yield con
        finally:
            con.close()


@dataclass(frozen=True)
class ModelBuild:
    name: str
    rows: int
    seconds: float
    columns: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DataTestResult:
    name: str
    target: str
    passed: bool
    failing_rows: int
    sample: list[dict[str, Any]]
    description: str


def _ensure_sources(con: Any, settings: Settings) -> None:
    """A view per snapshot table; a table never snapshotted gets an empty file with its schema."""
    import pyarrow.parquet as pq

    snapshot_dir(settings).mkdir(parents=True, exist_ok=True)
    for table in SNAPSHOT_TABLES:
        path = snapshot_path(settings, table)
        if not path.exists():
            pq.write_table(arrow_schema(table).empty_table(), path)
        con.execute(f"CREATE OR REPLACE VIEW \"{table}\" AS SELECT * FROM read_parquet('{path}')")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {BUILDS_TABLE} "
        "(model VARCHAR PRIMARY KEY, built_at TIMESTAMPTZ, rows BIGINT, code_version VARCHAR)"
    )


def _body(sql: str) -> str:
    return sql.strip().rstrip(";").strip() + "\n"


def _build_one(con: Any, project: Project, name: str) -> ModelBuild:
    import duckdb

    model = project.models[name]
    model.check_parsed()
    started = time.perf_counter()
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS\n{_body(model.sql)}')
    except duckdb.Error as exc:
        raise ModelError(f"model {name} ({model.path}) failed in DuckDB: {exc}") from None
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [name],
    ).fetchall()
    con.execute(
        f"INSERT OR REPLACE INTO {BUILDS_TABLE} VALUES (?, now(), ?, ?)", [name, rows, model.code_version]
    )
    return ModelBuild(name, rows, time.perf_counter() - started, [tuple(c) for c in columns])


def build_models(
    settings: Settings, names: list[str] | None = None, project: Project | None = None
) -> list[ModelBuild]:
    """Build `names` (default: all models) in dependency order, under the writer lock."""
    project = project or load_project()
    unknown = sorted(set(names or []) - set(project.models))
    if unknown:
        raise NotFound(f"model {unknown[0]} not found in {project.sql_dir / 'models'}")
    wanted = [m for m in project.order if names is None or m in names]
    with connect(settings, write=True) as con:
        _ensure_sources(con, settings)
        return [_build_one(con, project, name) for name in wanted]


def build_model(settings: Settings, name: str, project: Project | None = None) -> ModelBuild:
    return build_models(settings, [name], project)[0]


def _description(sql: str) -> str:
    lines = [line.strip()[2:].strip() for line in sql.splitlines() if line.strip().startswith("--")]
    return " ".join(lines)


def run_data_test(
    settings: Settings, name: str, project: Project | None = None, sample: int = 10
) -> DataTestResult:
    """Run one data test; it passes when its query returns no rows."""
    import duckdb

    project = project or load_project()
    if name not in project.tests:
        raise NotFound(f"data test {name} not found in {project.sql_dir / 'tests'}")
    test = project.tests[name]
    test.check_parsed()
    body = _body(test.sql)
    with connect(settings) as con:
        try:
            # one pass: the window counts every failing row, the limit keeps a sample
            cur = con.execute(
                f"SELECT *, count(*) OVER () AS _failing_rows FROM (\n{body}) LIMIT {int(sample)}"
            )
        except duckdb.Error as exc:
            raise ModelError(f"test {name} ({test.path}) failed in DuckDB: {exc}") from None
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    failing = rows[0]["_failing_rows"] if rows else 0
    for row in rows:
        del row["_failing_rows"]
    return DataTestResult(
        name, project.test_target(name), failing == 0, failing, rows, _description(test.sql)
    )


def run_data_tests(settings: Settings, project: Project | None = None) -> list[DataTestResult]:
    project = project or load_project()
    return [run_data_test(settings, name, project) for name in project.tests]


def built_at(settings: Settings, model: str) -> datetime | None:
    """When `model` was last built (None if never)."""
    import duckdb

    with connect(settings) as con:
        try:
            row = con.execute(f"SELECT built_at FROM {BUILDS_TABLE} WHERE model = ?", [model]).fetchone()
        except duckdb.CatalogException:
            return None
    return row[0] if row else None
