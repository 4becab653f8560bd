"""Engines, sessions and migrations for the one store (SQLite embedded, Postgres otherwise)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from xcoin_trading.config import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_engines: dict[str, sa.Engine] = {}


def _json_default(value):
    # Exchange replies arrive with Decimal numbers and datetimes: keep them exact as strings.
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value) -> str:
    return json.dumps(value, default=_json_default)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def engine_for(url: str) -> sa.Engine:
    """One pooled engine per URL for the process."""
    engine = _engines.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=_dumps)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # values_plus_batch: executemany UPDATEs (the fan-out's record phase) go in batches,
            # not one round trip per row.
            extra = {"executemany_mode": "values_plus_batch"} if "psycopg2" in url else {}
            engine = sa.create_engine(
                url, pool_pre_ping=True, pool_size=10, max_overflow=20, json_serializer=_dumps, **extra
            )
        _engines[url] = engine
    return engine


def get_engine(settings: Settings | None = None) -> sa.Engine:
    return engine_for((settings or get_settings()).database_url)


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on any error."""
    factory = sessionmaker(bind=get_engine(settings), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Apply migrations (`xcoin db upgrade`)."""
    from alembic import command

    settings = settings or get_settings()
    settings.ensure_dirs()
    command.upgrade(alembic_config(settings.database_url), revision)


def init_db(settings: Settings | None = None) -> None:
    upgrade(settings)
