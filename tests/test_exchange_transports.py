"""The async client over both transports (httpx pool shards, aiohttp): the same signed bytes, typed
errors, timeouts as ambiguous, Retry-After, and never a second order after a lost reply."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal

import pytest

from tests.fixtures.exchange import funded_account
from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AiohttpPool, AsyncCoinDCXClient, AsyncHttpPool
from xcoin_trading.exchange.errors import (
    AuthenticationError,
    DuplicateOrder,
    ExchangeTimeout,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidRequest,
    RateLimited,
)

TRANSPORTS = {
    "httpx": lambda timeout: AsyncHttpPool(shards=4, timeout=timeout),
    "aiohttp": lambda timeout: AiohttpPool(8, timeout=timeout),
}


def run(transport: str, url: str, creds: Credentials | None, body, timeout: float = 10.0, **kwargs):
    """Run `body(client)` on an async client over `transport`; the pool lives in that loop."""

    async def main():
        pool = TRANSPORTS[transport](timeout)
        try:
            client = AsyncCoinDCXClient(url, url, http_client=pool, timeout=timeout, **kwargs)
            client = client.with_credentials(creds) if creds else client
            return await body(client)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def _btc_trades(acct) -> int:
    return sum(1 for e in acct.ledger() if e["kind"] == "trade" and e["currency"] == "BTC")


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request) -> str:
    return request.param


def test_signed_order_fills_and_a_wrong_secret_is_refused(simulator, transport):
    acct = funded_account(simulator)
    order = run(transport, simulator.url, acct.credentials,
                lambda c: c.create_order("BTCUSDT", "buy", "market_order", "0.01", client_order_id="t-1"))  # fmt: skip
    assert order.status == "filled" and order.filled_quantity == Decimal("0.01")
    assert Decimal(acct.balances()["BTC"]["balance"]) == Decimal("0.01")
    bad = Credentials(acct.api_key, "not-the-secret")
    with pytest.raises(AuthenticationError) as info:
        run(transport, simulator.url, bad, lambda c: c.balances())
    assert "not-the-secret" not in str(info.value)
    acct.close()


def test_exchange_errors_arrive_typed(simulator, transport):
    acct = funded_account(simulator)

    async def body(c):
        errors = []
        for args in (("1", "a"), ("0.000011", "b"), ("0.01", "c"), ("0.01", "c")):
            try:
                await c.create_order("BTCUSDT", "buy", "market_order", args[0], client_order_id=args[1])
            except Exception as exc:  # noqa: BLE001 - collected and checked below
                errors.append(type(exc))
            else:
                errors.append(None)
        return errors

    assert run(transport, simulator.url, acct.credentials, body) == [
        InsufficientFunds, InvalidRequest, None, DuplicateOrder,
    ]  # fmt: skip
    acct.close()


def test_lost_reply_never_makes_a_second_order(simulator, transport):
    acct = funded_account(simulator)
    acct.admin.set_faults(lost_reply=1, count=1, endpoints=["orders/create"])
    order = run(transport, simulator.url, acct.credentials,
                lambda c: c.create_order_idempotent("BTCUSDT", "buy", "market_order", "0.01", client_order_id="l-1"))  # fmt: skip
    assert order.client_order_id == "l-1" and order.status == "filled"
    assert _btc_trades(acct) == 1
    acct.close()


def test_timeout_on_create_is_ambiguous_and_not_resent(simulator, transport):
    acct = funded_account(simulator)
    acct.admin.set_faults(timeout=1, count=1, endpoints=["orders/create"], timeout_s=1.0)
    with pytest.raises(ExchangeTimeout) as info:
        run(transport, simulator.url, acct.credentials, timeout=0.5,
            body=lambda c: c.create_order("BTCUSDT", "buy", "market_order", "0.01", client_order_id="t-2"))  # fmt: skip
    assert info.value.ambiguous
    assert _btc_trades(acct) == 0
    acct.close()


def test_reads_retry_through_5xx_timeout_and_429(simulator, transport):
    acct = funded_account(simulator)
    acct.admin.set_faults(
        {"error_5xx": 1, "count": 1, "endpoints": ["users/balances"]},
        {"timeout": 1, "count": 1, "endpoints": ["users/balances"], "timeout_s": 1.0},
        {"error_429": 1, "count": 1, "endpoints": ["users/balances"]},
    )
    usdt = run(transport, simulator.url, acct.credentials, lambda c: c.balance("USDT"), timeout=0.5)
    assert usdt.balance == Decimal(10000)
    assert acct.admin.faults()["injected"] == {"5xx": 1, "timeout": 1, "429": 1}
    acct.close()


def test_rate_limited_carries_retry_after(simulator, transport):
    acct = funded_account(simulator)
    acct.admin.set_faults(error_429=1, count=1, retry_after_s=3)
    with pytest.raises(RateLimited) as info:
        run(transport, simulator.url, acct.credentials, lambda c: c.balances(), read_attempts=1)
    assert info.value.retry_after == 3.0
    acct.close()


def test_nothing_listening_is_unavailable_not_ambiguous(transport):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        creds = Credentials("k", "s")
        with pytest.raises(ExchangeUnavailable) as info:
            run(transport, url, creds, lambda c: c.balances(), read_attempts=1)
    assert not info.value.ambiguous


def test_candle_query_parameters_reach_the_exchange(simulator, transport):
    frame = run(transport, simulator.url, None,
                lambda c: c.fetch_candles("BTCUSDT", "1m", 1704067200000 - 5 * 60_000, 1704067200000))  # fmt: skip
    assert frame["open_time"].to_list() == [1704067200000 - k * 60_000 for k in range(5, 0, -1)]
