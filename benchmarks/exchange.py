"""Loopback throughput of the CoinDCX client against the simulator.

Prints, for sync and async clients with 1 and 50 concurrent keys: order create+status round trips
per second; async creates/s across many keys (the fan-out's pattern); candle pages (1000 candles)
per second; and, in the same table, the bound the published rate limits would impose (16 req/s and
960/min per key, 2000/min per order endpoint) — the figure a real CoinDCX account could reach.

The simulator runs in its own process (`xcoin exchange serve --no-rate-limits`) so client and
server each get a core. Default sizes are quick; `--full` runs longer.

    .venv/bin/python benchmarks/exchange.py [--full] [--keys 50] [--fanout-keys 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool, CoinDCXClient, Credentials
from xcoin_trading.exchange.ratelimit import RateLimiter
from xcoin_trading.exchange.simulator import SimulatorAdmin, SimulatorProcess

QTY = "0.0002"  # ≈ 12 USDT at the generated BTC price: above the 5 USDT minimum


def make_keys(admin: SimulatorAdmin, n: int) -> list[Credentials]:
    creds = [Credentials(f"bench-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex) for _ in range(n)]
    for i in range(0, n, 500):
        admin.add_accounts(
            [
                {
                    "api_key": c.api_key,
                    "api_secret": c.api_secret,
                    "balances": {"USDT": "1000000", "BTC": "10"},
                }
                for c in creds[i : i + 500]
            ]
        )
    return creds


def sync_round_trips(url: str, creds: list[Credentials], per_key: int) -> float:
    """create + status per iteration, one thread per key; returns round trips per second."""
    limiter = RateLimiter.disabled()

    def work(cred: Credentials) -> None:
        with CoinDCXClient(url, url, cred, rate_limiter=limiter) as client:
            for i in range(per_key):
                order = client.create_order("BTCUSDT", "buy" if i % 2 == 0 else "sell", "market_order", QTY)
                client.order_status(id=order.id)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(creds)) as pool:
        list(pool.map(work, creds))
    return len(creds) * per_key / (time.perf_counter() - started)


async def _async_round_trips(url: str, creds: list[Credentials], per_key: int, with_status: bool) -> float:
    limiter = RateLimiter.disabled()
    pool = AsyncHttpPool(shards=min(len(creds), 64), connections_per_shard=2, timeout=30)
    base = AsyncCoinDCXClient(url, url, rate_limiter=limiter, http_client=pool)
    clients = [base.with_credentials(c) for c in creds]

    async def work(client: AsyncCoinDCXClient) -> None:
        for i in range(per_key):
            order = await client.create_order("BTCUSDT", "buy" if i % 2 == 0 else "sell", "market_order", QTY)
            if with_status:
                await client.order_status(id=order.id)

    started = time.perf_counter()
    await asyncio.gather(*(work(c) for c in clients))
    elapsed = time.perf_counter() - started
    await pool.aclose()
    return len(creds) * per_key / elapsed


def candle_pages(url: str, pages: int) -> float:
    with CoinDCXClient(url, url, rate_limiter=RateLimiter.disabled()) as client:
        start = 1704067200000 - 3 * 86_400_000
        started = time.perf_counter()
        for i in range(pages):
            s = start + (i % 4) * 1000 * 60_000
            client.candles_page("B-BTC_USDT", "1m", s, s + 999 * 60_000, 1000)
        return pages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="longer runs")
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--fanout-keys", type=int, default=1000)
    args = parser.parse_args()
    scale = 5 if args.full else 1
    server = SimulatorProcess(["--no-rate-limits", "--seed", "1", "--start-ms", "1704067200000"]).start()
    url = server.url
    try:
        with SimulatorAdmin(url) as admin:
            one = make_keys(admin, 1)
            many = make_keys(admin, args.keys)
            fan = make_keys(admin, args.fanout_keys)
        published = RateLimiter()

        def pair_bound(keys: int) -> float:  # a round trip is a create and a status request
            return (
                min(published.bound_per_second("create", keys), published.bound_per_second("status", keys))
                / 2
            )

        rows = []
        rate = sync_round_trips(url, one, 200 * scale)
        rows.append(("create+status round trips/s", "sync", 1, rate, pair_bound(1)))
        rate = sync_round_trips(url, many, 6 * scale)
        rows.append(("create+status round trips/s", "sync", len(many), rate, pair_bound(len(many))))
        rate = asyncio.run(_async_round_trips(url, one, 200 * scale, True))
        rows.append(("create+status round trips/s", "async", 1, rate, pair_bound(1)))
        rate = asyncio.run(_async_round_trips(url, many, 6 * scale, True))
        rows.append(("create+status round trips/s", "async", len(many), rate, pair_bound(len(many))))
        cpu0 = server.cpu_seconds()
        rate = asyncio.run(_async_round_trips(url, fan, scale, False))
        server_ms = (server.cpu_seconds() - cpu0) * 1000 / (len(fan) * scale)
        rows.append(
            (
                "order creates/s (fan-out)",
                "async",
                len(fan),
                rate,
                published.bound_per_second("create", len(fan)),
            )
        )
        rate = candle_pages(url, 40 * scale)
        rows.append(("candle pages/s (1000 x 1m)", "sync", 0, rate, published.bound_per_second("", 1)))
    finally:
        server.stop()
    print(
        f"\nCoinDCX client ↔ simulator on loopback (simulator in its own process, limits off){' --full' if args.full else ''}\n"
    )
    print(
        f"{'measure':<30} {'client':<6} {'keys':>5} {'measured/s':>11} {'rate-limit bound/s':>19} {'measured/bound':>15}"
    )
    for name, mode, keys, measured, bound in rows:
        print(
            f"{name:<30} {mode:<6} {keys or '-':>5} {measured:>11.1f} {bound:>19.1f} {measured / bound:>15.2f}"
        )
    print(
        f"\nSimulator CPU per order create: {server_ms:.2f} ms (one core serves ~{1000 / server_ms:.0f} creates/s)."
    )
    print(
        "Bound: the published CoinDCX limits (16 req/s and 960/min per key; create/status 2000/min per key) — "
        "a round trip is 2 requests; public candle pages are counted against one key's 16/s."
    )


if __name__ == "__main__":
    main()
