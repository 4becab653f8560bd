"""Token-bucket rate limits per API key (and optionally process-wide), as CoinDCX publishes them.

`reserve()` takes the tokens at once and returns how long the caller must wait, so the same
limiter serves threads (time.sleep) and asyncio (asyncio.sleep) and no lock is held while waiting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    requests: float
    per_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.per_seconds


# DOCS#faq: 16 requests/s and 960/min overall; DOCS#spot-api-rate-limits per endpoint per 60 s.
GENERAL_LIMITS: tuple[Limit, ...] = (Limit(16, 1), Limit(960, 60))
ENDPOINT_LIMITS: dict[str, Limit] = {
    "create": Limit(2000, 60),
    "create_multiple": Limit(2000, 60),
    "status": Limit(2000, 60),
    "status_multiple": Limit(2000, 60),
    "cancel": Limit(2000, 60),
    "edit": Limit(2000, 60),
    "cancel_by_ids": Limit(300, 60),
    "active_orders": Limit(300, 60),
    "cancel_all": Limit(30, 60),
}


class _Bucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, limit: Limit, now: float):
        self.capacity = float(limit.requests)
        self.rate = limit.rate
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token (possibly going into debt); seconds until it is really ours."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def peek(self, now: float) -> float:
        """Seconds until one token is free, without taking it (server-side check)."""
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class RateLimiter:
    """Buckets keyed by (api key, endpoint bucket); `scale` multiplies every published limit."""

    def __init__(
        self,
        general: tuple[Limit, ...] = GENERAL_LIMITS,
        endpoints: dict[str, Limit] | None = None,
        process_wide: tuple[Limit, ...] = (),
        *,
        scale: float = 1.0,
        enabled: bool = True,
    ):
        def scaled(limit: Limit) -> Limit:
            return Limit(limit.requests * scale, limit.per_seconds)

        self.enabled = enabled
        self.general = tuple(scaled(x) for x in general)
        self.endpoints = {
            k: scaled(v) for k, v in (ENDPOINT_LIMITS if endpoints is None else endpoints).items()
        }
        self.process_wide = tuple(scaled(x) for x in process_wide)
        self._buckets: dict[tuple[str, str, int], _Bucket] = {}
        self._chains: dict[tuple[str, str], list[_Bucket]] = {}  # (key, endpoint) -> its buckets
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> RateLimiter:
        return cls(enabled=False)

    def _limits(self, key: str, endpoint: str):
        for i, limit in enumerate(self.general):
            yield (key, "*", i), limit
        if endpoint in self.endpoints:
            yield (key, endpoint, 0), self.endpoints[endpoint]
        for i, limit in enumerate(self.process_wide):
            yield ("", "*", i), limit

    def _bucket(self, ident: tuple[str, str, int], limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get(ident)
        if bucket is None:
            bucket = self._buckets[ident] = _Bucket(limit, now)
        return bucket

    def _chain(self, key: str, endpoint: str, now: float) -> list[_Bucket]:
        """The buckets one call counts against, looked up once per (key, endpoint): the fan-out
        reserves tens of thousands of times per candle."""
        chain = self._chains.get((key, endpoint))
        if chain is None:
            chain = self._chains[key, endpoint] = [
                self._bucket(i, lim, now) for i, lim in self._limits(key, endpoint)
            ]
        return chain

    def reserve(self, key: str, endpoint: str) -> float:
        """Take a token from every bucket this call counts against; seconds to wait first."""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for bucket in self._chain(key, endpoint, now):
                wait = max(wait, bucket.take(now))
        return wait

    def check(self, key: str, endpoint: str) -> float:
        """Server side: 0.0 and the tokens are taken, or the seconds until a retry can pass."""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        with self._lock:
            buckets = self._chain(key, endpoint, now)
            wait = max((b.peek(now) for b in buckets), default=0.0)
            if wait == 0.0:
                for b in buckets:
                    b.take(now)
            return wait

    def bound_per_second(self, endpoint: str, keys: int = 1) -> float:
        """Sustained requests/s the limits allow for `keys` keys on one endpoint (for benchmarks)."""
        rates = [x.rate * keys for x in self.general]
        if endpoint in self.endpoints:
            rates.append(self.endpoints[endpoint].rate * keys)
        rates += [x.rate for x in self.process_wide]
        return min(rates) if rates else float("inf")


_default: RateLimiter | None = None


def default_limiter() -> RateLimiter:
    """One limiter per process, so two clients using the same key share its budget."""
    global _default
    if _default is None:
        _default = RateLimiter()
    return _default
