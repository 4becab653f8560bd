"""The shared (Redis) live registry never keeps an edited strategy's old settings: an edit committed
while a worker rebuilds the registry from the store voids that rebuild's write."""

from __future__ import annotations

import pytest

from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.live import registry as registry_module
from xcoin_trading.live.registry import RedisRegistry, registry_for, store_namespace
from xcoin_trading.services import strategies, users
from xcoin_trading.store.db import session_scope

KEY = "BTCUSDT:5m"


@pytest.fixture()
def shared(store, redis_url, monkeypatch):
    """The store with its Redis registry, as the API and the workers are configured."""
    monkeypatch.setenv("XCOIN_REDIS_URL", redis_url)
    reset_settings()
    settings = get_settings()
    with session_scope(settings) as s:
        author = users.register_user(s, "ada@registry.test", "correct-horse-battery", name="ada")
        strategy = strategies.create_strategy(s, author.id, name="sma", code="sma-reg", symbol="BTCUSDT",
                                              resolution="5m", builtin="sma_crossover",
                                              params={"fast": 10, "slow": 30})  # fmt: skip
        ids = author.id, strategy.id
    return settings, redis_url, ids


def _params_another_worker_reads(settings, redis_url) -> list[dict]:
    fresh = RedisRegistry(redis_url, store_namespace(settings), ttl_seconds=0)  # no in-process cache
    with session_scope(settings) as s:
        return [st.params for st in fresh.strategies_for(s, KEY)]


def test_an_edit_committed_during_a_rebuild_is_not_cached_with_its_old_settings(shared, monkeypatch):
    settings, redis_url, (author_id, strategy_id) = shared
    assert _params_another_worker_reads(settings, redis_url) == [{"fast": 10, "slow": 30}]
    registry_for(settings).invalidate()  # the next load rebuilds
    real_read, edited = registry_module._runnable, []

    def read_then_an_author_edits(session):
        rows = real_read(session)  # the rebuild has read the old settings...
        if not edited:  # ...and the author's edit commits (its after-commit invalidation runs) now
            edited.append(True)
            with session_scope(settings) as other:
                strategies.update_strategy(other, author_id, strategy_id, params={"fast": 17, "slow": 30})
        return rows

    monkeypatch.setattr(registry_module, "_runnable", read_then_an_author_edits)
    worker = RedisRegistry(redis_url, store_namespace(settings), ttl_seconds=0)
    with session_scope(settings) as s:
        seen = [st.params for st in worker.strategies_for(s, KEY)]
    assert edited and seen == [{"fast": 17, "slow": 30}]
    monkeypatch.setattr(registry_module, "_runnable", real_read)
    assert _params_another_worker_reads(settings, redis_url) == [{"fast": 17, "slow": 30}]


def test_while_changes_keep_landing_a_load_reads_the_store(shared, monkeypatch):
    settings, redis_url, (author_id, strategy_id) = shared
    real_read, fast = registry_module._runnable, iter(range(11, 40))

    def an_edit_lands_during_every_read(session):
        rows = real_read(session)
        with session_scope(settings) as other:
            strategies.update_strategy(other, author_id, strategy_id, params={"fast": next(fast), "slow": 30})
        return rows

    registry_for(settings).invalidate()
    monkeypatch.setattr(registry_module, "_runnable", an_edit_lands_during_every_read)
    worker = RedisRegistry(redis_url, store_namespace(settings), ttl_seconds=0)
    with session_scope(settings) as s:
        [seen] = worker.strategies_for(s, KEY)
    # Every rebuild was voided; the load answered from the store as of its last read, not from Redis.
    assert seen.params["fast"] == 10 + RedisRegistry.ATTEMPTS
    monkeypatch.setattr(registry_module, "_runnable", real_read)
    assert _params_another_worker_reads(settings, redis_url) == [
        {"fast": 11 + RedisRegistry.ATTEMPTS, "slow": 30}
    ]
