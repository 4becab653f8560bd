"""Reconciler phase 1: load what each account has unresolved and ask its exchange about it, in
batches (`status_multiple` by client id, futures positions + order lists, one ticker for spot stops).
A query that fails changes nothing for that account this pass."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.services.credentials import decrypt
from xcoin_trading.store.lifecycle import WATCHED, TradeStatus
from xcoin_trading.store.models import BrokerCredential, Order, Strategy, Subscription, Trade
from xcoin_trading.timeframes import utcnow

BATCH = 100  # client ids per status_multiple call
FUTURES_PAGES = 10  # pages of 100 futures orders read per account and pass (newest first)


@dataclass
class AccountWork:
    credential: BrokerCredential
    orders: list[Order] = field(default_factory=list)  # spot orders to ask about
    futures_watch: list[Order] = field(default_factory=list)  # futures orders to ask about, by client id
    futures_trades: list[Trade] = field(default_factory=list)
    check_positions: bool = False  # audit: look for positions the store does not know
    # answers
    spot: dict[str, ExchangeOrder] = field(default_factory=dict)
    positions: dict[str, Any] | None = None
    futures_orders: list[ExchangeOrder] | None = None
    futures_complete: bool = False  # the whole order list was read: "absent" means absent
    asked_at: datetime | None = None
    external: list[ExchangeOrder] = field(default_factory=list)
    error: str | None = None

    @property
    def asks_futures(self) -> bool:
        return bool(self.futures_watch or self.futures_trades or self.check_positions)


@dataclass
class ReconcileReport:
    accounts: int = 0
    api_calls: int = 0
    failed_accounts: int = 0
    transitions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duration_ms: int = 0

    def count(self, what: str, n: int = 1) -> None:
        self.transitions[what] += n


def load_work(
    session: Session, subscription_ids: list[int] | None = None, audit: bool = False
) -> dict[int, AccountWork]:
    work: dict[int, AccountWork] = {}

    def mine(query, model):
        column = model.id if model is Subscription else model.subscription_id
        return query if subscription_ids is None else query.where(column.in_(subscription_ids))

    rows = session.execute(mine(
        select(Order, BrokerCredential)
        .join(Subscription, Subscription.id == Order.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Order.status.in_(WATCHED)), Order)
    ).all()  # fmt: skip
    for order, cred in rows:
        w = work.setdefault(cred.id, AccountWork(cred))
        (w.futures_watch if "-" in order.market else w.orders).append(order)
    rows = session.execute(mine(
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == TradeStatus.OPEN, Trade.market_type == "futures"), Trade)
    ).all()  # fmt: skip
    for trade, cred in rows:
        work.setdefault(cred.id, AccountWork(cred)).futures_trades.append(trade)
    if audit:  # every account subscribed to a futures strategy: a position the store lacks is adopted
        rows = session.execute(mine(
            select(BrokerCredential)
            .join(Subscription, Subscription.broker_credential_id == BrokerCredential.id)
            .join(Strategy, Strategy.id == Subscription.strategy_id)
            .where(Subscription.is_active.is_(True), Strategy.symbol.contains("-")), Subscription)
        ).scalars().all()  # fmt: skip
        for cred in rows:
            work.setdefault(cred.id, AccountWork(cred)).check_positions = True
    return work


async def _ask(base: AsyncCoinDCXClient, vault, w: AccountWork, audit: bool, sem: asyncio.Semaphore) -> int:
    """Fill `w` with the exchange's answers; returns the number of API calls made."""
    calls = 0
    async with sem:
        try:
            keys = decrypt(vault, w.credential)
            client = base.with_credentials(Credentials(keys.api_key.reveal(), keys.api_secret.reveal()))
            ids = [o.client_order_id for o in w.orders]
            for start in range(0, len(ids), BATCH):
                calls += 1
                for ex in await client.order_status_multiple(client_order_ids=ids[start : start + BATCH]):
                    if ex.client_order_id:
                        w.spot[ex.client_order_id] = ex
            if w.asks_futures:
                w.asked_at = utcnow()
                calls += 1
                w.positions = {p.pair: p for p in await client.futures_positions()}
                wanted = {o.client_order_id for o in w.futures_watch}
                w.futures_orders = []
                for page in range(1, FUTURES_PAGES + 1):  # newest first
                    calls += 1
                    rows = await client.futures_orders(page=page, size=100)
                    w.futures_orders += rows
                    wanted -= {o.client_order_id for o in rows}
                    if len(rows) < 100:
                        w.futures_complete = True
                        break
                    if not wanted and page >= 1:
                        break
            if audit:
                for market in sorted({o.market for o in w.orders}):
                    calls += 1
                    w.external += [o for o in await client.active_orders(market)]
        except ExchangeError as exc:  # could not ask: nothing about this account changes this pass
            w.error = str(exc)[:300]
        except Exception as exc:  # noqa: BLE001 - one account never stops the others
            w.error = f"{type(exc).__name__}: {exc}"[:300]
    return calls


async def ask_all(
    api_url: str, public_url: str, vault, work: list[AccountWork], audit: bool, concurrency: int
) -> int:
    pool = AsyncHttpPool(shards=min(256, max(1, len(work))))
    base = AsyncCoinDCXClient(api_url, public_url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)
    try:
        return sum(await asyncio.gather(*(_ask(base, vault, w, audit, sem) for w in work)))
    finally:
        await pool.aclose()


async def ticker(api_url: str, public_url: str) -> dict[str, Decimal]:
    async with AsyncCoinDCXClient(api_url, public_url) as client:
        return {t.market: t.last_price for t in await client.ticker()}
