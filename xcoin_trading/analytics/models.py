"""The dbt_like_sql project: SQL models (one SELECT per file) and data tests (queries that must return
no rows). sqlglot finds the tables each file reads, which gives the build order and Dagster's lineage.

Errors: a file that does not parse is kept with its error (file, line, column) and fails when built;
an unknown table, a statement other than one query, or a cycle fails the load, naming the model.
"""

from __future__ import annotations

import graphlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from xcoin_trading.analytics.snapshot import SNAPSHOT_TABLES
from xcoin_trading.errors import XcoinError

SQL_DIR_ENV = "XCOIN_SQL_DIR"
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class ModelError(XcoinError):
    """A model or data test cannot be loaded or built; the message names the file."""


class SqlParseError(ModelError):
    """The file is not valid SQL; the message names the file, line and column."""


def default_sql_dir() -> Path:
    """`XCOIN_SQL_DIR`, else `dbt_like_sql/` beside the packages (the repository root)."""
    override = os.environ.get(SQL_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "dbt_like_sql"


@dataclass(frozen=True)
class SqlFile:
    name: str
    path: Path
    sql: str
    kind: str  # "model" or "test"
    refs: frozenset[str] = frozenset()
    primary: str | None = None  # the first table it reads (a data test on snapshots attaches there)
    parse_error: str | None = None

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def check_parsed(self) -> None:
        if self.parse_error:
            raise SqlParseError(self.parse_error)


@dataclass(frozen=True)
class Project:
    sql_dir: Path
    models: dict[str, SqlFile]
    tests: dict[str, SqlFile]
    order: list[str] = field(default_factory=list)  # models, upstream first

    def model_deps(self, name: str) -> list[str]:
        return sorted(self.models[name].refs & set(self.models))

    def source_deps(self, name: str, kind: str = "model") -> list[str]:
        item = (self.models if kind == "model" else self.tests)[name]
        return sorted(item.refs & set(SNAPSHOT_TABLES))

    def downstream(self, names: list[str]) -> list[str]:
        """`names` and every model that reads them, in build order."""
        wanted = set(names)
        for model in self.order:
            if self.models[model].refs & wanted:
                wanted.add(model)
        return [m for m in self.order if m in wanted]

    def test_target(self, name: str) -> str:
        """The node a data test is attached to: its most downstream model, else a snapshot table."""
        refs = self.tests[name].refs
        models = [m for m in self.order if m in refs]
        if models:
            return models[-1]
        return self.tests[name].primary or sorted(refs)[0]


def _describe(path: Path, sql_dir: Path) -> str:
    try:
        return str(path.relative_to(sql_dir.parent))
    except ValueError:
        return str(path)


def _parse(path: Path, kind: str, sql_dir: Path) -> SqlFile:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    name, where = path.stem, _describe(path, sql_dir)
    if not NAME_RE.match(name):
        raise ModelError(f"{kind} file {where}: name must be lower_snake_case (it becomes a table name)")
    sql = path.read_text()
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        reason = first.get("description") or str(exc).splitlines()[0]
        position = f"line {first.get('line', '?')}, column {first.get('col', '?')}"
        return SqlFile(name, path, sql, kind, parse_error=f"{where}: {position}: {reason}")
    except TokenError as exc:
        return SqlFile(name, path, sql, kind, parse_error=f"{where}: {exc}")
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        found = ", ".join(type(s).__name__.upper() for s in statements) or "nothing"
        raise ModelError(f"{kind} {name} ({where}) must be exactly one SELECT, found {found}")
    tree = statements[0]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables = [t.name for t in tree.find_all(exp.Table) if t.name and t.name not in ctes]
    return SqlFile(name, path, sql, kind, refs=frozenset(tables), primary=tables[0] if tables else None)


def load_project(sql_dir: Path | None = None) -> Project:
    """Read and check every model and data test; raises ModelError naming the first bad model."""
    sql_dir = Path(sql_dir or default_sql_dir())
    if not (sql_dir / "models").is_dir():
        raise ModelError(
            f"no models folder at {sql_dir / 'models'} (set {SQL_DIR_ENV} to a dbt_like_sql dir)"
        )
    models = {p.stem: _parse(p, "model", sql_dir) for p in sorted((sql_dir / "models").glob("*.sql"))}
    tests_dir = sql_dir / "tests"
    tests = (
        {p.stem: _parse(p, "test", sql_dir) for p in sorted(tests_dir.glob("*.sql"))}
        if tests_dir.is_dir()
        else {}
    )
    clash = set(models) & set(SNAPSHOT_TABLES)
    if clash:
        raise ModelError(f"model {sorted(clash)[0]} has the name of a snapshot table; rename the file")
    known = set(models) | set(SNAPSHOT_TABLES)
    for item in [*models.values(), *tests.values()]:
        unknown = sorted(item.refs - known)
        if unknown:
            raise ModelError(
                f"{item.kind} {item.name} ({_describe(item.path, sql_dir)}) references unknown table "
                f"{unknown[0]!r}; known tables: {', '.join(sorted(known))}"
            )
        if item.kind == "test" and not item.parse_error and not item.refs:
            raise ModelError(f"test {item.name} reads no table, so it checks nothing")
    graph = {name: m.refs & set(models) for name, m in models.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise ModelError(f"models depend on each other in a cycle: {' -> '.join(exc.args[1])}") from None
    return Project(sql_dir, models, tests, order)
