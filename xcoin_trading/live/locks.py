"""Work-saving locks for one candle close. The database row is the guarantee; a lock only keeps a
second worker from loading candles and running the strategy for nothing.

A lock is never released when its holder finishes (a late worker must not run the same candle
again): it expires after its TTL (10× the resolution). A holder that died can be taken over, so
re-running an interrupted candle works at once: the lock value names the holder (host, pid), and a
holder on this host whose process is gone is dead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from enum import StrEnum
from typing import Protocol


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerState(StrEnum):
    """What this host can tell about a worker from its id (`worker_identity()`)."""

    ALIVE = "alive"  # on this host, its process exists
    DEAD = "dead"  # on this host, its process is gone
    ELSEWHERE = "elsewhere"  # on another host: cannot be told from here
    UNKNOWN = "unknown"  # not an id a worker writes: leave its work alone
    NONE = "none"  # no worker recorded


def worker_state(worker_id: str | None) -> WorkerState:
    """The one worker-alive check (locks, take-overs, the run-failure recorder)."""
    if not worker_id:
        return WorkerState.NONE
    try:
        host, pid, _ = worker_id.split(":")
        if host != socket.gethostname():
            return WorkerState.ELSEWHERE
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return WorkerState.DEAD
    except PermissionError:  # the process exists, under another user
        return WorkerState.ALIVE
    except ValueError:
        return WorkerState.UNKNOWN
    return WorkerState.ALIVE


def holder_is_dead(holder: str) -> bool:
    """True only when we can prove it: the holder ran on this host and its process is gone."""
    return worker_state(holder) is WorkerState.DEAD


class Locks(Protocol):
    def acquire(self, key: str, holder: str, ttl_seconds: int) -> bool: ...

    def holder(self, key: str) -> str | None: ...

    def release(self, key: str, holder: str) -> None:
        """Drop the lock if `holder` still has it: only after a transient failure, so the next
        worker may try the candle again while it is fresh."""


class LocalLocks:
    """In-process locks for the embedded default (one process, one machine)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def acquire(self, key: str, holder: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        with self._mutex:
            current = self._held.get(key)
            if (
                current is not None
                and current[1] > now
                and current[0] != holder
                and not holder_is_dead(current[0])
            ):
                return False
            self._held[key] = (holder, now + ttl_seconds)
            return True

    def holder(self, key: str) -> str | None:
        with self._mutex:
            current = self._held.get(key)
            return current[0] if current and current[1] > time.monotonic() else None

    def release(self, key: str, holder: str) -> None:
        with self._mutex:
            if self._held.get(key, ("",))[0] == holder:
                del self._held[key]


# Take over only if the value is still the dead holder we saw (no lost update between two takers).
_TAKEOVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLocks:
    """`SET key holder NX EX ttl`, shared by every worker."""

    prefix = "xcoin:lock:"

    def __init__(self, url: str):
        import redis

        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._takeover = self._redis.register_script(_TAKEOVER)
        self._release = self._redis.register_script(_RELEASE)

    def acquire(self, key: str, holder: str, ttl_seconds: int) -> bool:
        name = self.prefix + key
        if self._redis.set(name, holder, nx=True, ex=ttl_seconds):
            return True
        # redis-py types every reply bytes | str; decode_responses=True makes it str (the stub cannot tell).
        current: str | None = self._redis.get(name)  # pyright: ignore[reportAssignmentType]
        if current is None:
            return bool(self._redis.set(name, holder, nx=True, ex=ttl_seconds))
        if current == holder:
            return True
        if holder_is_dead(current):
            return bool(self._takeover(keys=[name], args=[current, holder, ttl_seconds]))
        return False

    def holder(self, key: str) -> str | None:
        return self._redis.get(self.prefix + key)  # pyright: ignore[reportReturnType]  # str: decode_responses=True

    def release(self, key: str, holder: str) -> None:
        self._release(keys=[self.prefix + key], args=[holder])


_local = LocalLocks()


def make_locks(redis_url: str | None) -> Locks:
    return RedisLocks(redis_url) if redis_url else _local
