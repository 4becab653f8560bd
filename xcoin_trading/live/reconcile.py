"""Follow every order to its end and close trades with their exact realised P&L.

One pass: load what is unresolved from the store, ask each account's exchange in batches
(`status_multiple` by client id, futures positions + order lists, one ticker for spot stops), apply
the answers in one transaction, then act where a stop was crossed (intent first, as in the fan-out).

What is "unknown" stays unknown (nautilus_trader's rule): a query that failed changes nothing and is
retried next pass; an order the exchange does not know is LOST only after `LOST_AFTER` passes; a
flat futures position without a closing order we can see is flagged, never guessed.

Transitions:
- ENTRY filled → trade OPEN at the fill's average price and fee (partial fills: the trade is the
  filled quantity once the entry is final; the take profit is placed for what was filled).
- spot TAKE_PROFIT filled → trade CLOSED (TAKE_PROFIT).
- spot stop: last price at or through the stop → cancel the take profit, market sell, CLOSED (STOP_LOSS).
  If the take profit filled first (the cancel says so), the trade closes as TAKE_PROFIT (flag RACE).
- futures: position flat → the closing order names the exit: tpsl_exit take_profit/stop → TAKE_PROFIT /
  STOP_LOSS, liquidate → LIQUIDATION, exit or anything else → MANUAL.
- an exchange order with a client id we never issued → flagged EXTERNAL (audit passes).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.markets import default_market
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.live import fanout
from xcoin_trading.live.trades import client_order_id, close_trade
from xcoin_trading.services.credentials import decrypt
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import BrokerCredential, Order, Subscription, Trade
from xcoin_trading.timeframes import utcnow

if TYPE_CHECKING:
    from xcoin_trading.live.coordinator import LiveContext

LOST_AFTER = 3  # passes in which the exchange had no such order
WATCHED = ("SENDING", "UNKNOWN", "OPEN", "PARTIALLY_FILLED")
BATCH = 100  # client ids per status_multiple call


@dataclass
class AccountWork:
    credential: BrokerCredential
    orders: list[Order] = field(default_factory=list)  # spot orders to ask about
    futures_trades: list[Trade] = field(default_factory=list)
    # answers
    spot: dict[str, ExchangeOrder] = field(default_factory=dict)
    positions: dict[str, Any] | None = None
    futures_orders: list[ExchangeOrder] | None = None
    external: list[ExchangeOrder] = field(default_factory=list)
    error: str | None = None


@dataclass
class ReconcileReport:
    accounts: int = 0
    api_calls: int = 0
    failed_accounts: int = 0
    transitions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duration_ms: int = 0

    def count(self, what: str, n: int = 1) -> None:
        self.transitions[what] += n


def _load(session: Session) -> dict[int, AccountWork]:
    work: dict[int, AccountWork] = {}
    rows = session.execute(
        select(Order, BrokerCredential)
        .join(Subscription, Subscription.id == Order.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Order.status.in_(WATCHED), ~Order.market.contains("-"))
    ).all()
    for order, cred in rows:
        work.setdefault(cred.id, AccountWork(cred)).orders.append(order)
    rows = session.execute(
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == "OPEN", Trade.market_type == "futures")
    ).all()
    for trade, cred in rows:
        work.setdefault(cred.id, AccountWork(cred)).futures_trades.append(trade)
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
            if w.futures_trades:
                pairs = sorted({t.symbol for t in w.futures_trades})
                calls += 2
                w.positions = {p.pair: p for p in await client.futures_positions(pairs=pairs)}
                w.futures_orders = await client.futures_orders(statuses=["filled"], size=100)
            if audit:
                for market in sorted({o.market for o in w.orders}):
                    calls += 1
                    w.external += [o for o in await client.active_orders(market)]
        except ExchangeError as exc:  # could not ask: nothing about this account changes this pass
            w.error = str(exc)[:300]
        except Exception as exc:  # noqa: BLE001 - one account never stops the others
            w.error = f"{type(exc).__name__}: {exc}"[:300]
    return calls


async def _ask_all(
    api_url: str, public_url: str, vault, work: list[AccountWork], audit: bool, concurrency: int
) -> int:
    pool = AsyncHttpPool(shards=min(256, max(1, len(work))))
    base = AsyncCoinDCXClient(api_url, public_url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)
    try:
        return sum(await asyncio.gather(*(_ask(base, vault, w, audit, sem) for w in work)))
    finally:
        await pool.aclose()


async def _ticker(api_url: str, public_url: str) -> dict[str, Decimal]:
    async with AsyncCoinDCXClient(api_url, public_url) as client:
        return {t.market: t.last_price for t in await client.ticker()}


def _apply_order(order: Order, ex: ExchangeOrder) -> None:
    order.exchange_order_id = ex.id
    order.status = fanout.order_status_of(ex)
    order.filled_quantity, order.avg_price, order.fee = (
        ex.filled_quantity,
        ex.avg_price or None,
        ex.fee_amount,
    )
    order.raw_last_response, order.lookup_misses = ex.raw, 0


def _apply_spot(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    trade_ids = {o.trade_id for o in w.orders if o.trade_id}
    trades = (
        {t.id: t for t in session.scalars(select(Trade).where(Trade.id.in_(trade_ids)))} if trade_ids else {}
    )
    # One query for the account's orders (not one per order), and no write where nothing moved:
    # a resting order asked every minute must not cost an UPDATE every minute.
    ids = [o.id for o in w.orders]
    fresh = {o.id: o for o in session.scalars(select(Order).where(Order.id.in_(ids)))} if ids else {}
    for stale in w.orders:
        order = fresh[stale.id]
        if order.status not in WATCHED:  # another pass or the fan-out got there first
            continue
        ex = w.spot.get(order.client_order_id)
        trade = trades.get(order.trade_id) if order.trade_id else None
        if ex is None:
            order.lookup_misses += 1
            if order.lookup_misses >= LOST_AFTER:
                order.status, order.error = (
                    "LOST",
                    f"the exchange has no order {order.client_order_id} after {order.lookup_misses} passes",
                )
                report.count("order_lost")
                if trade is not None and order.leg == "ENTRY" and trade.status == "PENDING":
                    trade.status = "FAILED"
                    trade.flags = [*trade.flags, "ENTRY_LOST"]
            continue
        before = order.status
        seen = (order.exchange_order_id, order.status, order.filled_quantity, order.fee, order.lookup_misses)
        if seen == (ex.id, fanout.order_status_of(ex), ex.filled_quantity, ex.fee_amount, 0):
            continue
        _apply_order(order, ex)
        if order.status == before:
            continue
        report.count(f"{order.leg.lower()}_{order.status.lower()}")
        if trade is None:
            continue
        final = order.status in ("FILLED", "CANCELLED", "REJECTED")
        if order.leg == "ENTRY" and trade.status == "PENDING":
            if ex.filled_quantity > 0 and final:
                trade.status, trade.quantity, trade.entry_price = "OPEN", ex.filled_quantity, ex.avg_price
                trade.entry_fee = trade.fees = ex.fee_amount
                trade.entry_time = ex.updated_at or now
                if ex.filled_quantity < order.quantity:
                    trade.flags = [*trade.flags, "PARTIAL_ENTRY"]
            elif final:
                trade.status = "FAILED"
        elif order.leg == "TAKE_PROFIT" and order.status == "FILLED" and trade.status == "OPEN":
            close_trade(session, trade, exit_price=ex.avg_price, exit_fee=ex.fee_amount, exit_type="TAKE_PROFIT",
                        exit_time=ex.updated_at or now)  # fmt: skip
            report.count("closed_take_profit")
        elif order.leg == "TAKE_PROFIT" and order.status == "CANCELLED" and trade.status == "OPEN":
            trade.flags = [*trade.flags, "TAKE_PROFIT_CANCELLED"]
        elif order.leg in ("EXIT", "STOP_LOSS") and order.status == "FILLED" and trade.status == "OPEN":
            close_trade(session, trade, exit_price=ex.avg_price, exit_fee=ex.fee_amount,
                        exit_type="SIGNAL" if order.leg == "EXIT" else "STOP_LOSS", exit_time=ex.updated_at or now)  # fmt: skip
            report.count(f"closed_{order.leg.lower()}")


def _exit_type(ex: ExchangeOrder) -> str:
    if ex.stage == "liquidate":
        return "LIQUIDATION"
    if ex.stage == "tpsl_exit":
        return "TAKE_PROFIT" if "take_profit" in ex.order_type else "STOP_LOSS"
    return "MANUAL"


def _apply_futures(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    for stale in w.futures_trades:
        trade = session.get(Trade, stale.id)
        if trade.status != "OPEN":
            continue
        position = (w.positions or {}).get(trade.symbol)
        if position is not None and position.active_pos != 0:
            continue
        # Created at or after the entry (a trigger is created when the entry fills), and not already
        # the exit of an earlier trade: that one may have closed in the very millisecond we re-entered.
        closing = [
            o for o in (w.futures_orders or [])
            if o.market == trade.symbol and o.stage in ("tpsl_exit", "liquidate", "exit")
            and (trade.entry_time is None or (o.created_at or o.updated_at) >= trade.entry_time)
        ]  # fmt: skip
        if closing:
            taken = set(
                session.scalars(
                    select(Order.exchange_order_id).where(
                        Order.exchange_order_id.in_([o.id for o in closing])
                    )
                )
            )
            closing = [o for o in closing if o.id not in taken]
        if not closing:
            if "FLAT_WITHOUT_CLOSE" not in trade.flags:
                trade.flags = [*trade.flags, "FLAT_WITHOUT_CLOSE"]
                report.count("futures_flat_unexplained")
            continue
        ex = min(closing, key=lambda o: o.updated_at)
        exit_type = _exit_type(ex)
        leg = exit_type if exit_type in ("TAKE_PROFIT", "STOP_LOSS") else "EXIT"
        session.add(Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                          leg=leg, client_order_id=client_order_id(trade.execution_id or 0, trade.subscription_id, leg, trade.id),
                          exchange_order_id=ex.id, market=trade.symbol, side=ex.side, order_type=ex.order_type,
                          stop_price=ex.stop_price or None, quantity=ex.total_quantity, filled_quantity=ex.filled_quantity,
                          avg_price=ex.avg_price, fee=ex.fee_amount, status="FILLED", raw_last_response=ex.raw))  # fmt: skip
        session.flush()  # the next trade of this account must see this order as taken
        close_trade(session, trade, exit_price=ex.avg_price, exit_fee=ex.fee_amount, exit_type=exit_type,
                    exit_time=ex.updated_at or now)  # fmt: skip
        report.count(f"closed_{_exit_type(ex).lower()}")


def _flag_external(session: Session, w: AccountWork, report: ReconcileReport) -> None:
    if not w.external:
        return
    ids = [o.client_order_id for o in w.external if o.client_order_id]
    ours = (
        set(session.scalars(select(Order.client_order_id).where(Order.client_order_id.in_(ids))))
        if ids
        else set()
    )
    for ex in w.external:
        if ex.client_order_id in ours:
            continue
        cid = f"ext-{ex.id}"[:36]
        if session.scalar(select(Order.id).where(Order.client_order_id == cid)) is None:
            session.add(Order(leg="EXIT", client_order_id=cid, exchange_order_id=ex.id, market=ex.market, side=ex.side,
                              order_type=ex.order_type, price=ex.price, quantity=ex.total_quantity,
                              filled_quantity=ex.filled_quantity, status="EXTERNAL", raw_last_response=ex.raw,
                              error=f"order on account of user {w.credential.user_id} that xcoin never placed"))  # fmt: skip
            report.count("external")


def _stop_outs(session: Session, prices: dict[str, Decimal], report: ReconcileReport) -> list[fanout.Job]:
    """Spot LONG trades whose stop was crossed: STOP_LOSS market-sell intents (cancel the TP first)."""
    stops: list[tuple[Order, BrokerCredential, str | None]] = []
    take_profits: dict[int, dict[int, str]] = {}  # strategy id -> open trade id -> TP client id
    rows = session.execute(
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == "OPEN", Trade.market_type == "spot", Trade.stop_loss.is_not(None))
    ).all()
    for trade, cred in rows:
        price = prices.get(trade.symbol)
        if price is None or price > trade.stop_loss:
            continue
        cid = client_order_id(trade.execution_id or 0, trade.subscription_id, "STOP_LOSS", trade.id)
        order = session.scalar(select(Order).where(Order.client_order_id == cid))
        if order is None:
            market = default_market(trade.symbol)
            order = Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                          leg="STOP_LOSS", client_order_id=cid, market=trade.symbol, side="sell",
                          order_type="market_order", quantity=market.round_quantity(trade.quantity), status="INTENT")  # fmt: skip
            session.add(order)
            report.count("stop_triggered")
        if order.status == "LOST":  # an intent that never reached the exchange must not disarm the stop
            order.status = "UNKNOWN"  # asked by client id first, then sent
        if order.status in ("INTENT", "SENDING", "UNKNOWN"):
            if trade.strategy_id not in take_profits:
                take_profits[trade.strategy_id] = fanout._take_profits_of(session, trade.strategy_id)
            tp = take_profits[trade.strategy_id].get(trade.id)
            stops.append((order, cred, tp))
    session.flush()
    return [fanout.Job(fanout.Intent.of(order), "spot", cred, cancel_first=tp) for order, cred, tp in stops]


def reconcile_once(ctx: LiveContext, now: datetime | None = None, *, audit: bool = False) -> ReconcileReport:
    """One reconcile pass over every account with unresolved orders or open futures trades."""
    started = time.perf_counter()
    now = now or utcnow()
    report = ReconcileReport()
    with session_scope(ctx.settings) as session:
        work = list(_load(session).values())
    report.accounts = len(work)
    if work:
        report.api_calls += asyncio.run(
            _ask_all(ctx.api_url, ctx.public_url, ctx.vault, work, audit, ctx.concurrency)
        )
    with session_scope(ctx.settings) as session:
        for w in work:
            if w.error is not None:
                report.failed_accounts += 1
                continue
            _apply_spot(session, w, now, report)
            _apply_futures(session, w, now, report)
            _flag_external(session, w, report)
    with session_scope(ctx.settings) as session:
        needs_stop = session.scalar(
            select(Trade.id)
            .where(Trade.status == "OPEN", Trade.market_type == "spot", Trade.stop_loss.is_not(None))
            .limit(1)
        )
    if needs_stop is not None:
        report.api_calls += 1
        try:
            prices = asyncio.run(_ticker(ctx.api_url, ctx.public_url))
        except ExchangeError:  # no price is not "not crossed" either: the stops are watched next pass
            report.count("ticker_unavailable")
            prices = {}
        with session_scope(ctx.settings) as session:
            jobs = _stop_outs(session, prices, report)
            fanout.mark_sending(session, jobs)
        if jobs:
            report.api_calls += 2 * len(jobs)
            asyncio.run(fanout.send_all(ctx.api_url, ctx.public_url, ctx.vault, jobs, ctx.concurrency))
            with session_scope(ctx.settings) as session:
                _record_stop_outs(session, jobs, now, report)
    report.duration_ms = int((time.perf_counter() - started) * 1000)
    return report


def _record_stop_outs(
    session: Session, jobs: list[fanout.Job], now: datetime, report: ReconcileReport
) -> None:
    result = fanout.FanoutResult()
    for job in jobs:
        if job.error and "nsufficient" in job.error and job.cancel_first:
            # The take profit filled before we could cancel it: the trade closes as TAKE_PROFIT next pass.
            order = session.get(Order, job.order.id)
            order.status, order.error = "CANCELLED", f"not needed: take profit filled first ({job.error})"
            trade = session.get(Trade, order.trade_id)
            trade.flags = [*trade.flags, "RACE"]
            report.count("race")
            job.error = None
            job.result = None
    fanout.record(session, [j for j in jobs if j.result is not None or j.error is not None], now, result)
    for job in jobs:
        if job.result is not None and job.result.status == "filled":
            trade = session.get(Trade, job.order.trade_id)
            if trade.status == "OPEN":
                close_trade(session, trade, exit_price=job.result.avg_price, exit_fee=job.result.fee_amount,
                            exit_type="STOP_LOSS", exit_time=job.result.updated_at or now)  # fmt: skip
                report.count("closed_stop_loss")
