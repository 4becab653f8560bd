"""Which strategies run on which candle (`symbol:resolution`), and cached strategy settings.

Redis holds the shared truth (sets `xcoin:candle:<key>` of strategy ids, the set of active candle
keys, and a JSON settings entry per strategy deleted on every update); each process keeps a short
in-process cache in front of it. On the embedded default an in-process registry reads the store.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from xcoin_trading.services.strategies import on_strategy_change
from xcoin_trading.store.models import Strategy


@dataclass(frozen=True)
class StrategySettings:
    id: int
    code: str
    symbol: str
    resolution: str
    lookback: int
    builtin: str | None
    source: str | None
    params: dict[str, Any]
    version: str

    @property
    def candle_key(self) -> str:
        return candle_key(self.symbol, self.resolution)

    @classmethod
    def from_row(cls, row: Strategy) -> StrategySettings:
        return cls(row.id, row.code, row.symbol, row.resolution, row.lookback, row.builtin, row.source,
                   dict(row.params or {}), row.version)  # fmt: skip


def candle_key(symbol: str, resolution: str) -> str:
    return f"{symbol}:{resolution}"


def _runnable(session: Session):
    """Active strategies that may trade: built-ins, and user code that passed validation."""
    return session.scalars(
        select(Strategy).where(
            Strategy.is_active.is_(True),
            Strategy.deleted_at.is_(None),
            or_(Strategy.builtin.is_not(None), Strategy.validation_status == "VALID"),
        )
    ).all()


def _table(settings: Iterable[StrategySettings]) -> dict[str, list[StrategySettings]]:
    table: dict[str, list[StrategySettings]] = {}
    for s in settings:
        table.setdefault(s.candle_key, []).append(s)
    return table


def _store_table(session: Session) -> dict[str, list[StrategySettings]]:
    """The runnable strategies by candle key, as the store holds them now."""
    return _table(StrategySettings.from_row(row) for row in _runnable(session))


class Registry(Protocol):
    def strategies_for(self, session: Session, key: str) -> list[StrategySettings]: ...

    def active_candle_keys(self, session: Session) -> set[str]: ...

    def invalidate(self, strategy_id: int | None = None) -> None: ...


class StoreRegistry:
    """Embedded default: read the store, cache for a few seconds in this process."""

    def __init__(self, ttl_seconds: float = 5.0):
        self._ttl = ttl_seconds
        self._cache: tuple[float, dict[str, list[StrategySettings]]] | None = None
        self._mutex = threading.Lock()

    def _load(self, session: Session) -> dict[str, list[StrategySettings]]:
        with self._mutex:
            if self._cache and time.monotonic() - self._cache[0] < self._ttl:
                return self._cache[1]
            table = _store_table(session)
            self._cache = (time.monotonic(), table)
            return table

    def strategies_for(self, session: Session, key: str) -> list[StrategySettings]:
        return list(self._load(session).get(key, []))

    def active_candle_keys(self, session: Session) -> set[str]:
        return set(self._load(session))

    def invalidate(self, strategy_id: int | None = None) -> None:
        with self._mutex:
            self._cache = None


class RedisRegistry(StoreRegistry):
    """Redis sets shared by every worker, rebuilt from the store when absent or invalidated.

    Every committed change bumps a generation before deleting what it changed. A rebuild watches the
    generation from before its read of the store to its write: a change committed in between (the
    read may predate it) voids the write, so an edited strategy is never cached with its old
    settings. Keys are namespaced by the store they describe, so deployments sharing a Redis never
    mix."""

    ATTEMPTS = 3  # rebuilds tried per load while changes keep landing; then the store is read directly

    def __init__(self, url: str, namespace: str, ttl_seconds: float = 5.0):
        import redis

        super().__init__(ttl_seconds)
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self.ns = f"xcoin:{namespace}"
        self.CANDLES = f"{self.ns}:candles"
        self.BUILT = f"{self.ns}:registry:built"
        self.GENERATION = f"{self.ns}:registry:generation"

    def rebuild(self, session: Session) -> bool:
        """Write the store's runnable strategies; False (nothing written) when a change was
        committed while they were read."""
        import redis

        with self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(self.GENERATION)
            rows = [StrategySettings.from_row(r) for r in _runnable(session)]
            old_keys = pipe.smembers(self.CANDLES)
            pipe.multi()
            for key in old_keys:  # a set: the pipeline runs commands at once until multi()
                pipe.delete(f"{self.ns}:candle:{key}")
            pipe.delete(self.CANDLES)
            for s in rows:
                pipe.sadd(self.CANDLES, s.candle_key)
                pipe.sadd(f"{self.ns}:candle:{s.candle_key}", s.id)
                pipe.set(f"{self.ns}:strategy:{s.id}", json.dumps(asdict(s)))
            pipe.set(self.BUILT, "1")
            try:
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def _read(self) -> dict[str, list[StrategySettings]] | None:
        """The registry as Redis holds it; None when it is not built or a change deleted part of it."""
        if not self._redis.exists(self.BUILT):
            return None
        found: list[StrategySettings] = []
        for key in self._redis.smembers(self.CANDLES):
            for sid in self._redis.smembers(f"{self.ns}:candle:{key}"):
                raw = self._redis.get(f"{self.ns}:strategy:{sid}")
                if raw is None:  # deleted by a change since the build
                    return None
                found.append(StrategySettings(**json.loads(raw)))  # pyright: ignore[reportArgumentType]  # str: decode_responses=True
        return _table(found)

    def _load(self, session: Session) -> dict[str, list[StrategySettings]]:
        with self._mutex:
            if self._cache and time.monotonic() - self._cache[0] < self._ttl:
                return self._cache[1]
        table = self._read()
        for _ in range(self.ATTEMPTS):
            if table is not None:
                break
            if self.rebuild(session):
                table = self._read()
        if table is None:  # changes keep landing: this load reads the store, Redis is rebuilt later
            table = _store_table(session)
        with self._mutex:
            self._cache = (time.monotonic(), table)
        return table

    def invalidate(self, strategy_id: int | None = None) -> None:
        """After a committed change: a new generation (voiding a rebuild under way), then
        delete-on-update of one strategy's settings, or (None) of the whole registry."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(self.GENERATION)
        if strategy_id is not None:
            pipe.delete(f"{self.ns}:strategy:{strategy_id}")
        pipe.delete(self.BUILT)  # symbol/resolution/is_active may have moved
        pipe.execute()
        super().invalidate(strategy_id)


_store_registries: dict[str, StoreRegistry] = {}


def store_namespace(settings) -> str:
    """Short stable name of the store, so lock and registry keys never collide across stores."""
    import hashlib

    return hashlib.sha256(settings.database_url.encode()).hexdigest()[:10]


def registry_for(settings) -> Registry:
    return make_registry(settings.redis_url, store_namespace(settings))


def make_registry(redis_url: str | None, namespace: str = "default") -> Registry:
    """Shared Redis registry, or this process's registry of the store named by `namespace`."""
    if redis_url:
        return RedisRegistry(redis_url, namespace)
    return _store_registries.setdefault(namespace, StoreRegistry())


def _invalidate_changed(strategy_id: int | None) -> None:
    from xcoin_trading.config import get_settings

    registry_for(get_settings()).invalidate(strategy_id)


def follow_strategy_changes() -> None:
    """Invalidate this deployment's registry after every committed strategy change. Called by each
    process that edits strategies (API, CLI) and on import, so any process holding a registry follows."""
    on_strategy_change(_invalidate_changed)


follow_strategy_changes()
