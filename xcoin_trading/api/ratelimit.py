"""Login throttling: failed attempts counted per email and per client IP in fixed windows.

The counter lives in Redis when `XCOIN_REDIS_URL` is set (shared by every API worker), in process
memory otherwise; both implement `AttemptCounter`. Only failures count; a successful login clears
that email's counter (never the IP's, so one good account cannot launder a stuffing run).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from xcoin_trading.errors import XcoinError


class TooManyAttempts(XcoinError):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"too many failed login attempts; retry in {retry_after} seconds")


class AttemptCounter(Protocol):
    def count(self, key: str) -> tuple[int, int]:
        """(failures in the current window, seconds until it ends)."""

    def add(self, key: str, window: int) -> int:
        """Count one failure; the window starts at the first one. Returns the new count."""

    def clear(self, key: str) -> None: ...


class MemoryCounter:
    """Process-local counter for the embedded default (one API process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, tuple[int, float]] = {}

    def count(self, key: str) -> tuple[int, int]:
        with self._lock:
            n, ends = self._hits.get(key, (0, 0.0))
            left = ends - self._clock()
            if left <= 0:
                self._hits.pop(key, None)
                return 0, 0
            return n, math.ceil(left)

    def add(self, key: str, window: int) -> int:
        with self._lock:
            now = self._clock()
            n, ends = self._hits.get(key, (0, 0.0))
            if ends <= now:
                n, ends = 0, now + window
            self._hits[key] = (n + 1, ends)
            if len(self._hits) > 100_000:  # bound memory under a spray of addresses
                self._hits = {k: v for k, v in self._hits.items() if v[1] > now}
            return n + 1

    def clear(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)


class RedisCounter:
    """Shared counter: INCR + EXPIRE NX, so the window starts at the first failure."""

    def __init__(self, client, prefix: str = "xcoin:login:"):
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str) -> RedisCounter:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))

    def count(self, key: str) -> tuple[int, int]:
        pipe = self._redis.pipeline()
        pipe.get(self._prefix + key)
        pipe.ttl(self._prefix + key)
        raw, ttl = pipe.execute()
        if raw is None or ttl is None or ttl < 0:
            return 0, 0
        return int(raw), int(ttl)

    def add(self, key: str, window: int) -> int:
        pipe = self._redis.pipeline()
        pipe.incr(self._prefix + key)
        pipe.expire(self._prefix + key, window, nx=True)
        n, _ = pipe.execute()
        return int(n)

    def clear(self, key: str) -> None:
        self._redis.delete(self._prefix + key)


def _key(kind: str, value: str) -> str:
    # Hash so no email address sits in Redis in clear.
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


@dataclass
class LoginThrottle:
    counter: AttemptCounter
    per_email: int = 5
    per_ip: int = 30
    window_seconds: int = 900

    def check(self, email: str, ip: str) -> None:
        """Refuse before the password is even checked, so a locked account leaks nothing."""
        for key, limit in ((_key("email", email), self.per_email), (_key("ip", ip), self.per_ip)):
            n, left = self.counter.count(key)
            if n >= limit:
                raise TooManyAttempts(max(left, 1))

    def failed(self, email: str, ip: str) -> None:
        self.counter.add(_key("email", email), self.window_seconds)
        self.counter.add(_key("ip", ip), self.window_seconds)

    def succeeded(self, email: str) -> None:
        self.counter.clear(_key("email", email))


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()
