"""CoinDCX REST client: `CoinDCXClient` (blocking, httpx) and `AsyncCoinDCXClient` (httpx, or
aiohttp through an `AiohttpPool` for fan-outs) run the endpoint plans of `endpoints/` with their
transport, rate limiter and read retries. Each method returns its model (`client.balance("USDT")`
is a `Balance`; awaited, on the async client).

Public names other modules use: `Credentials`, `CoinDCXClient`, `AsyncCoinDCXClient`,
`AsyncHttpPool`, `AiohttpPool`; every endpoint method, including `fetch_candles`, `create_order_idempotent`
and `find_order_by_client_id`, is on both clients (awaitable on the async one).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import Any

import httpx

from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.endpoints import (
    MAX_CANDLES_PER_PAGE,
    AsyncRequests,
    Call,
    Endpoints,
    Plan,
    Sleep,
    decode_reply,
)
from xcoin_trading.exchange.errors import ExchangeError, ExchangeTimeout, ExchangeUnavailable


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process for every httpx client: building one loads the CA bundle,
    ~32 ms, and a live candle opens two blocking clients (market, candles) in a fresh process."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


__all__ = [
    "MAX_CANDLES_PER_PAGE",
    "AiohttpPool",
    "AsyncCoinDCXClient",
    "AsyncHttpPool",
    "CoinDCXClient",
    "Credentials",
]


class CoinDCXClient(Endpoints):
    """Blocking client. Use as a context manager or call `.close()`."""

    def __init__(
        self,
        api_url: str,
        public_url: str,
        credentials: Credentials | None = None,
        *,
        http_client: httpx.Client | None = None,
        **kwargs: Any,  # timeout, rate_limiter, read_attempts, backoff: see `Requests`
    ):
        super().__init__(api_url, public_url, credentials, **kwargs)
        timeout = self.timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, verify=tls_context())

    def with_credentials(self, credentials: Credentials) -> CoinDCXClient:
        """Another account's client sharing this one's connection pool and limiter."""
        clone = CoinDCXClient(
            self.api_url, self.public_url, credentials, timeout=self.timeout, rate_limiter=self.rate_limiter,
            http_client=self._http, read_attempts=self.read_attempts,
        )  # fmt: skip
        clone._markets = self._markets
        return clone

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> CoinDCXClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        method, url, payload, headers = self._prepare(call)
        try:
            response = self._http.request(method, url, content=payload, headers=headers, params=call.params)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None
        return self._decode(response, call)

    def _execute(self, call: Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            wait = self.rate_limiter.reserve(self._limit_key(call), call.bucket)
            if wait > 0:
                time.sleep(wait)
            try:
                return self._send(call)
            except ExchangeError as exc:
                delay = self._retry_delay(call, attempt, exc)
                if delay is None:
                    raise
                time.sleep(delay)

    def _drive(self, plan: Plan[Any]) -> Any:
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = plan.send(None)
                    continue
                try:
                    result = self._execute(step)
                except ExchangeError as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value


class AsyncHttpPool:
    """Many small httpx pools, one chosen per API key, for fan-out over thousands of keys.

    httpcore's pool scans every connection for every request, so one pool with many concurrent
    connections costs O(n²) CPU (measured: 50 keys on one pool ran 7× slower than 50 pools of one
    connection). The process's one TLS context is shared, so thousands of pools stay cheap to create.
    """

    def __init__(self, shards: int = 64, connections_per_shard: int = 2, timeout: float = 10.0):
        self._ssl = tls_context()
        self._limits = httpx.Limits(
            max_connections=connections_per_shard, max_keepalive_connections=connections_per_shard
        )
        self._timeout = timeout
        self._shards: list[httpx.AsyncClient | None] = [None] * max(1, shards)

    def for_key(self, api_key: str) -> httpx.AsyncClient:
        import zlib

        i = zlib.crc32(api_key.encode()) % len(self._shards)
        client = self._shards[i]
        if client is None:
            client = self._shards[i] = httpx.AsyncClient(
                timeout=self._timeout, limits=self._limits, verify=self._ssl
            )
        return client

    async def aclose(self) -> None:
        for client in self._shards:
            if client is not None:
                await client.aclose()
        self._shards = [None] * len(self._shards)


class AiohttpPool:
    """One aiohttp connection pool for a whole fan-out (every key, every phase of a candle).

    aiohttp costs a third of httpx's client CPU per request (measured in benchmarks/fanout.py),
    and its pool hands out a free keep-alive connection without scanning all of them. Create it
    inside the event loop that uses it; `await aclose()` at the end.
    """

    def __init__(self, connections: int = 200, timeout: float = 10.0):
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, connections), limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def aclose(self) -> None:
        await self.session.close()


def _query(params: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters encoded as httpx encodes them (True -> "true", None -> "", lists repeat)."""
    if not params:
        return None

    def text(v: Any) -> str:
        return "true" if v is True else "false" if v is False else "" if v is None else str(v)

    return [(k, text(x)) for k, v in params.items() for x in (v if isinstance(v, list | tuple) else (v,))]


class AsyncCoinDCXClient(Endpoints, AsyncRequests):
    """Same methods as `CoinDCXClient`, each returning an awaitable. `async with` or `await .close()`.

    `http_client` may be an `AsyncHttpPool` (fan-out over many keys: the key picks its shard) or
    an `AiohttpPool` (same requests, signed bytes and typed errors over aiohttp).
    """

    def __init__(
        self,
        api_url: str,
        public_url: str,
        credentials: Credentials | None = None,
        *,
        http_client: httpx.AsyncClient | AsyncHttpPool | AiohttpPool | None = None,
        **kwargs: Any,  # timeout, rate_limiter, read_attempts, backoff: see `Requests`
    ):
        super().__init__(api_url, public_url, credentials, **kwargs)
        timeout = self.timeout
        self._owns_http = http_client is None
        self._pool = http_client if isinstance(http_client, AsyncHttpPool | AiohttpPool) else None
        self._aiohttp = http_client if isinstance(http_client, AiohttpPool) else None
        self._http: httpx.AsyncClient | None
        if isinstance(http_client, AiohttpPool):
            self._http = None
        elif isinstance(http_client, AsyncHttpPool):
            self._http = http_client.for_key(credentials.api_key if credentials else "public")
        else:
            self._http = http_client or httpx.AsyncClient(timeout=timeout, verify=tls_context())

    def with_credentials(self, credentials: Credentials) -> AsyncCoinDCXClient:
        """Another account's client sharing this one's connections (or pool shards) and limiter."""
        clone = AsyncCoinDCXClient(
            self.api_url, self.public_url, credentials, timeout=self.timeout, rate_limiter=self.rate_limiter,
            http_client=self._pool or self._http, read_attempts=self.read_attempts,
        )  # fmt: skip
        clone._markets = self._markets
        return clone

    async def close(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncCoinDCXClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, call: Call) -> Any:
        if self._aiohttp is not None:
            return await self._send_aiohttp(self._aiohttp, call)
        assert self._http is not None  # set in __init__ whenever no aiohttp pool is
        method, url, payload, headers = self._prepare(call)
        try:
            response = await self._http.request(
                method, url, content=payload, headers=headers, params=call.params
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None
        return self._decode(response, call)

    async def _send_aiohttp(self, pool: AiohttpPool, call: Call) -> Any:
        import aiohttp

        method, url, payload, headers = self._prepare(call)
        try:
            async with pool.session.request(
                method, url, data=payload, headers=headers, params=_query(call.params)
            ) as response:
                content = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise ExchangeUnavailable(
                f"could not connect ({type(exc).__name__})", endpoint=call.path
            ) from None
        except TimeoutError as exc:  # total or read timeout: the exchange may have acted
            raise ExchangeTimeout(f"no reply in time ({type(exc).__name__})", endpoint=call.path) from None
        except aiohttp.ClientConnectorError as exc:
            raise ExchangeUnavailable(
                f"could not connect ({type(exc).__name__})", endpoint=call.path
            ) from None
        except aiohttp.ClientError as exc:  # never the text: it may carry request details
            raise ExchangeTimeout(
                f"connection failed mid-request ({type(exc).__name__})", endpoint=call.path
            ) from None
        return decode_reply(response.status, response.headers, content, call)

    async def _execute(self, call: Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            wait = self.rate_limiter.reserve(self._limit_key(call), call.bucket)
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._send(call)
            except ExchangeError as exc:
                delay = self._retry_delay(call, attempt, exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _drive(self, plan: Plan[Any]) -> Any:
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = plan.send(None)
                    continue
                try:
                    result = await self._execute(step)
                except ExchangeError as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value
