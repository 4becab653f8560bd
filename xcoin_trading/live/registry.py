"""Which strategies run on which candle (`symbol:resolution`), and cached strategy settings.

Redis holds the shared truth (sets `xcoin:candle:<key>` of strategy ids, the set of active candle
keys, and a JSON settings entry per strategy deleted on every update); each process keeps a short
in-process cache in front of it. On the embedded default an in-process registry reads the store.
"""

from __future__ import annotations

import json
import threading
import time
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
            table: dict[str, list[StrategySettings]] = {}
            for row in _runnable(session):
                s = StrategySettings.from_row(row)
                table.setdefault(s.candle_key, []).append(s)
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

    Keys are namespaced by the store they describe, so deployments sharing a Redis never mix."""

    def __init__(self, url: str, namespace: str, ttl_seconds: float = 5.0):
        import redis

        super().__init__(ttl_seconds)
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self.ns = f"xcoin:{namespace}"
        self.CANDLES = f"{self.ns}:candles"
        self.BUILT = f"{self.ns}:registry:built"

    def rebuild(self, session: Session) -> None:
        rows = [StrategySettings.from_row(r) for r in _runnable(session)]
        pipe = self._redis.pipeline(transaction=True)
        for key in self._redis.smembers(self.CANDLES):
            pipe.delete(f"{self.ns}:candle:{key}")
        pipe.delete(self.CANDLES)
        for s in rows:
            pipe.sadd(self.CANDLES, s.candle_key)
            pipe.sadd(f"{self.ns}:candle:{s.candle_key}", s.id)
            pipe.set(f"{self.ns}:strategy:{s.id}", json.dumps(asdict(s)))
        pipe.set(self.BUILT, "1")
        pipe.execute()

    def _load(self, session: Session) -> dict[str, list[StrategySettings]]:
        with self._mutex:
            if self._cache and time.monotonic() - self._cache[0] < self._ttl:
                return self._cache[1]
        if not self._redis.exists(self.BUILT):
            self.rebuild(session)
        table: dict[str, list[StrategySettings]] = {}
        for key in self._redis.smembers(self.CANDLES):
            for sid in self._redis.smembers(f"{self.ns}:candle:{key}"):
                raw = self._redis.get(f"{self.ns}:strategy:{sid}")
                if raw is None:  # settings deleted on update: reload this one from the store
                    row = session.get(Strategy, int(sid))
                    if row is None or not row.is_active or row.deleted_at is not None:
                        continue
                    s = StrategySettings.from_row(row)
                    self._redis.set(f"{self.ns}:strategy:{sid}", json.dumps(asdict(s)))
                else:
                    s = StrategySettings(**json.loads(raw))
                table.setdefault(key, []).append(s)  # pyright: ignore[reportArgumentType]  # str: decode_responses=True
        with self._mutex:
            self._cache = (time.monotonic(), table)
        return table

    def invalidate(self, strategy_id: int | None = None) -> None:
        """Delete-on-update: one strategy's settings, or (None) the whole registry."""
        if strategy_id is None:
            self._redis.delete(self.BUILT)
        else:
            self._redis.delete(f"{self.ns}:strategy:{strategy_id}")
            self._redis.delete(self.BUILT)  # symbol/resolution/is_active may have moved
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
