"""One reconcile pass over many open trades: API calls and duration, batched vs the seeds' design.

Seeded directly: N accounts (users, encrypted keys, subscriptions as in benchmarks/fanout.py) each
holding T open spot trades whose take profit rests on the simulator (placed through the real
client, so the exchange knows every order), and matching `trades`/`orders` rows. Then, in the same
run against the same exchange state:

- xcoin: `reconcile_once` — per account one `status_multiple` per 100 client ids, one ticker for
  the watched spot stops (none crossed here), one transaction to apply;
- seeds: one `orders/status` call per open order (what the seeds' monitor did every minute), with
  the same async client, connection pool and concurrency, so only the batching differs.

The simulator runs in its own process replaying real BTCUSDT 1m candles, rate limits OFF (the
published 16 req/s per key would make the seeds' design take T/16 s per account and hide the
difference in call count behind throttling; the table reports calls, which do not depend on it).
Store: Postgres when XCOIN_TEST_POSTGRES_URL is set (`. /tmp/xcoin/dev.env`), else SQLite.

    .venv/bin/python benchmarks/reconcile.py            # 10 000 trades across 1 000 accounts
    .venv/bin/python benchmarks/reconcile.py --quick    # 1 000 trades across 100 accounts
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTCUSDT-1m-2024-01.parquet"
QTY = Decimal("0.0001")


async def _place_take_profits(
    url: str, creds: list, per_account: int, price: Decimal, concurrency: int
) -> list:
    """Resting limit sells on the exchange; returns [(account index, client id, exchange id)]."""
    from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool

    pool = AsyncHttpPool(shards=64)
    base = AsyncCoinDCXClient(url, url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)
    placed: list = []

    async def one(i: int, c, j: int) -> None:
        async with sem:
            cid = f"bench-{i}-{j}"
            order = await base.with_credentials(c).create_order(
                "BTCUSDT", "sell", "limit_order", QTY, price, client_order_id=cid
            )
            placed.append((i, cid, order.id))

    try:
        await asyncio.gather(*(one(i, c, j) for i, c in enumerate(creds) for j in range(per_account)))
    finally:
        await pool.aclose()
    return placed


def seed_trades(settings, strategy_id: int, placed: list, entry: Decimal) -> int:
    """One OPEN trade + its OPEN take-profit order row per placed order (bulk insert)."""
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Order, Subscription, Trade

    with session_scope(settings) as session:
        subs = list(
            session.execute(
                sa.select(Subscription.id, Subscription.user_id)
                .where(Subscription.strategy_id == strategy_id)
                .order_by(Subscription.id)
            )
        )
        trades = [
            Trade(
                subscription_id=subs[i][0],
                strategy_id=strategy_id,
                user_id=subs[i][1],
                symbol="BTCUSDT",
                market_type="spot",
                side="LONG",
                quantity=QTY,
                entry_price=entry,
                stop_loss=entry / 2,
                take_profit=entry * 2,
                status="OPEN",
                entry_fee=Decimal(0),
            )  # fmt: skip
            for i, _, _ in placed
        ]
        session.add_all(trades)
        session.flush()
        session.add_all(
            Order(
                subscription_id=t.subscription_id,
                trade_id=t.id,
                leg="TAKE_PROFIT",
                client_order_id=cid,
                exchange_order_id=xid,
                market="BTCUSDT",
                side="sell",
                order_type="limit_order",
                price=t.take_profit,
                quantity=QTY,
                status="OPEN",
            )  # fmt: skip
            for t, (_, cid, xid) in zip(trades, placed, strict=True)
        )
    return len(placed)


async def seed_design_pass(url: str, vault, settings, concurrency: int) -> tuple[int, float]:
    """The seeds' monitor: for each open order, one status call. Returns (calls, seconds)."""
    import sqlalchemy as sa

    from xcoin_trading.exchange.auth import Credentials
    from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool
    from xcoin_trading.services.credentials import decrypt
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BrokerCredential, Order, Subscription

    t0 = time.perf_counter()
    with session_scope(settings) as session:
        rows = session.execute(
            sa.select(Order.client_order_id, BrokerCredential)
            .join(Subscription, Subscription.id == Order.subscription_id)
            .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
            .where(Order.status.in_(("OPEN", "PARTIALLY_FILLED")))
        ).all()
        keys = {}
        for _, cred in rows:
            if cred.id not in keys:
                k = decrypt(vault, cred)
                keys[cred.id] = Credentials(k.api_key.reveal(), k.api_secret.reveal())
        work = [(cid, keys[cred.id]) for cid, cred in rows]
    pool = AsyncHttpPool(shards=256)
    base = AsyncCoinDCXClient(url, url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)

    async def one(cid: str, creds) -> None:
        async with sem:
            await base.with_credentials(creds).order_status(client_order_id=cid)

    try:
        await asyncio.gather(*(one(cid, c) for cid, c in work))
    finally:
        await pool.aclose()
    return len(work), time.perf_counter() - t0


def run(accounts: int, per_account: int, repeats: int) -> list[tuple]:
    from fanout import drop_store, fresh_store, seed

    from xcoin_trading.exchange.client import CoinDCXClient
    from xcoin_trading.exchange.simulator import SimulatorAdmin, SimulatorProcess
    from xcoin_trading.live.coordinator import LiveContext
    from xcoin_trading.live.locks import LocalLocks
    from xcoin_trading.live.reconcile import reconcile_once
    from xcoin_trading.live.registry import StoreRegistry
    from xcoin_trading.vault import Vault

    rows = []
    with SimulatorProcess(["--no-rate-limits", "--replay", str(DATA), "--symbol", "BTCUSDT"]) as sim:
        admin = SimulatorAdmin(sim.url)
        admin.configure(max_open_orders=max(25, per_account))
        settings = fresh_store(f"rec{accounts}")
        try:
            t = time.perf_counter()
            strategy_id, creds = seed(settings, admin, accounts)
            with CoinDCXClient(sim.url, sim.url) as client:
                last = next(t.last_price for t in client.ticker() if t.market == "BTCUSDT")
            price = (last * 2).quantize(Decimal("0.01"))
            placed = asyncio.run(_place_take_profits(sim.url, creds, per_account, price, 200))
            n = seed_trades(settings, strategy_id, placed, last)
            seed_s = time.perf_counter() - t
            vault = Vault.from_settings(settings)
            ctx = LiveContext(settings=settings, api_url=sim.url, public_url=sim.url, locks=LocalLocks(),
                              registry=StoreRegistry(ttl_seconds=0), vault=vault, concurrency=200)  # fmt: skip
            ours, seeds = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                report = reconcile_once(ctx)
                ours.append((report.api_calls, time.perf_counter() - t0, report.failed_accounts))
                seeds.append(asyncio.run(seed_design_pass(sim.url, vault, settings, 200)))
            best = min(ours, key=lambda r: r[1])
            best_seed = min(seeds, key=lambda r: r[1])
            assert best[2] == 0, "some accounts could not be asked"
            rows.append((accounts, n, seed_s, best[0], best[1], best_seed[0], best_seed[1]))
        finally:
            admin.close()
            drop_store(settings)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 accounts × 10 trades")
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="passes per design; the best is reported")
    args = parser.parse_args()
    # A throw-away master key for the benchmark's own store (as benchmarks/fanout.py does).
    os.environ.setdefault("XCOIN_ENCRYPTION_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    accounts = args.accounts or (100 if args.quick else 1000)
    rows = run(accounts, args.per_account, args.repeats)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="one reconcile pass (simulator in its own process, rate limits off; best of "
                        f"{args.repeats})")  # fmt: skip
    for col in ("accounts", "open trades", "seed setup s", "xcoin calls", "xcoin pass s",
                "seeds' calls", "seeds' pass s", "calls ratio", "time ratio"):  # fmt: skip
        table.add_column(col, justify="right")
    for accounts, n, seed_s, calls, secs, s_calls, s_secs in rows:
        table.add_row(str(accounts), str(n), f"{seed_s:.1f}", str(calls), f"{secs:.2f}", str(s_calls),
                      f"{s_secs:.2f}", f"{s_calls / calls:.1f}×", f"{s_secs / secs:.1f}×")  # fmt: skip
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
