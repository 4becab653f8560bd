"""Login throttling: failed attempts counted per email and per client IP in fixed windows.

The counter lives in Redis when `XCOIN_REDIS_URL` is set (shared by every API worker), in process
memory otherwise; both implement `AttemptCounter`. An attempt is reserved atomically BEFORE the
password is checked (Redis INCR + EXPIRE in one script, or under a lock in memory), so however many
requests arrive at once, at most the limit are ever verified in a window. A reservation that turns
out a success is given back: only failures stay counted; a successful login clears that email's
counter (never the IP's, so one good account cannot launder a stuffing run).
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
        ...

    def add(self, key: str, window: int) -> int:
        """Count one failure; the window starts at the first one. Returns the new count."""
        ...

    def reserve(self, key: str, window: int, limit: int) -> int:
        """Count one attempt if fewer than `limit` are counted; 0 if so, else seconds left in the window."""
        ...

    def release(self, key: str) -> None:
        """Give back one reserved attempt."""

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

    def reserve(self, key: str, window: int, limit: int) -> int:
        with self._lock:
            now = self._clock()
            n, ends = self._hits.get(key, (0, 0.0))
            if ends <= now:
                n, ends = 0, now + window
            if n >= limit:
                return max(math.ceil(ends - now), 1)
            self._hits[key] = (n + 1, ends)
            if len(self._hits) > 100_000:
                self._hits = {k: v for k, v in self._hits.items() if v[1] > now}
            return 0

    def release(self, key: str) -> None:
        with self._lock:
            n, ends = self._hits.get(key, (0, 0.0))
            if n > 0:
                self._hits[key] = (n - 1, ends)

    def clear(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)


# KEYS[1] counter; ARGV window, limit. INCR (the window starts with the first attempt), and undo it
# when over the limit: one atomic step, whatever the number of API workers asking at once.
_RESERVE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
if n > tonumber(ARGV[2]) then redis.call('DECR', KEYS[1]); return math.max(ttl, 1) end
return 0
"""
_RELEASE = """
if (tonumber(redis.call('GET', KEYS[1]) or '0')) > 0 then redis.call('DECR', KEYS[1]) end
"""


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

    def reserve(self, key: str, window: int, limit: int) -> int:
        return int(self._redis.eval(_RESERVE, 1, self._prefix + key, window, limit))

    def release(self, key: str) -> None:
        self._redis.eval(_RELEASE, 1, self._prefix + key)

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

    def reserve(self, email: str, ip: str) -> None:
        """Count this attempt as a failure in advance, or refuse it (429) when the email or the
        address has used its attempts. Call `succeeded` or `release` when it was not a failure."""
        email_key, ip_key = _key("email", email), _key("ip", ip)
        wait = self.counter.reserve(email_key, self.window_seconds, self.per_email)
        if wait:
            raise TooManyAttempts(wait)
        wait = self.counter.reserve(ip_key, self.window_seconds, self.per_ip)
        if wait:
            self.counter.release(email_key)
            raise TooManyAttempts(wait)

    def release(self, email: str, ip: str) -> None:
        """The reserved attempt was not a password failure (e.g. the database was down)."""
        self.counter.release(_key("email", email))
        self.counter.release(_key("ip", ip))

    def succeeded(self, email: str, ip: str | None = None) -> None:
        self.counter.clear(_key("email", email))
        if ip is not None:
            self.counter.release(_key("ip", ip))


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()
