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

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.exchange.client import AsyncCoinDCXClient, AsyncHttpPool
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.live import fanout
from xcoin_trading.live.trades import client_order_id, close_trade
from xcoin_trading.services.credentials import decrypt
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import (
    BrokerCredential,
    Order,
    Strategy,
    StrategyExecution,
    Subscription,
    Trade,
)
from xcoin_trading.timeframes import utcnow

if TYPE_CHECKING:
    from xcoin_trading.live.context import LiveContext

LOST_AFTER = 3  # passes in which the exchange had no such order
WATCHED = ("SENDING", "UNKNOWN", "OPEN", "PARTIALLY_FILLED")
BATCH = 100  # client ids per status_multiple call
FUTURES_PAGES = 10  # pages of 100 futures orders read per account and pass (newest first)
MAX_TAKE_PROFITS = 5  # placements of a take profit per trade before the operator is asked


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


def _load(
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
        .where(Trade.status == "OPEN", Trade.market_type == "futures"), Trade)
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
    _apply_orders(session, w.orders, w.spot, True, now, report)
    if w.futures_orders is not None and w.futures_watch:
        answers = {o.client_order_id: o for o in w.futures_orders if o.client_order_id}
        _apply_orders(session, w.futures_watch, answers, w.futures_complete, now, report)
    session.flush()  # the futures closes below must see the orders resolved here as taken


def _apply_orders(session: Session, orders: list[Order], answers: dict[str, ExchangeOrder], complete: bool,
                  now: datetime, report: ReconcileReport) -> None:  # fmt: skip
    """Each order as the exchange answered for its client id; absent only counts when the answer was
    complete (a futures order list read only in part says nothing about the rest)."""
    trade_ids = {o.trade_id for o in orders if o.trade_id}
    trades = (
        {t.id: t for t in session.scalars(select(Trade).where(Trade.id.in_(trade_ids)))} if trade_ids else {}
    )
    # One query for the account's orders (not one per order), and no write where nothing moved:
    # a resting order asked every minute must not cost an UPDATE every minute.
    ids = [o.id for o in orders]
    fresh = {o.id: o for o in session.scalars(select(Order).where(Order.id.in_(ids)))} if ids else {}
    for stale in orders:
        order = fresh[stale.id]
        if order.status not in WATCHED:  # another pass or the fan-out got there first
            continue
        ex = answers.get(order.client_order_id)
        trade = trades.get(order.trade_id) if order.trade_id else None
        if ex is None and not complete:
            continue
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
            if o.market == trade.symbol and o.status == "filled" and o.stage in ("tpsl_exit", "liquidate", "exit")
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


def _settle_pending(session: Session, report: ReconcileReport, subscription_ids: list[int] | None) -> None:
    """A PENDING trade whose entry is final takes the entry's outcome: open with its fill, or failed."""
    query = (
        select(Trade, Order)
        .outerjoin(Order, (Order.trade_id == Trade.id) & (Order.leg == "ENTRY"))
        .where(Trade.status == "PENDING")
    )
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    for trade, entry in session.execute(query).all():
        if entry is None:  # written with its entry in one transaction: never sent
            trade.status, trade.flags = "FAILED", [*trade.flags, "NO_ENTRY_ORDER"]
        elif entry.status in ("FILLED", "CANCELLED", "REJECTED", "LOST") and entry.filled_quantity > 0:
            trade.status, trade.quantity, trade.entry_price = "OPEN", entry.filled_quantity, entry.avg_price
            trade.entry_fee = trade.fees = entry.fee
            trade.entry_time = entry.updated_at
        elif entry.status in ("CANCELLED", "REJECTED", "LOST"):
            trade.status = "FAILED"
        else:
            continue
        report.count(f"pending_{trade.status.lower()}")


def _adopt_positions(session: Session, w: AccountWork, now: datetime, report: ReconcileReport) -> None:
    """A futures position the store does not know: an entry of ours the store gave up on is linked
    back to its trade (found by client id); anything else is adopted as a trade flagged ADOPTED,
    so it is protected, closed by a flatten and in the P&L. Never on a pair the store touched since
    the question was asked (its answer may predate a close we just recorded)."""
    if w.positions is None or w.futures_orders is None:
        return
    subs = list(session.execute(
        select(Subscription.id, Subscription.user_id, Subscription.strategy_id, Strategy.symbol)
        .join(Strategy, Strategy.id == Subscription.strategy_id)
        .where(Subscription.broker_credential_id == w.credential.id)
    ).all())  # fmt: skip
    sub_ids = [s.id for s in subs]
    if not sub_ids:
        return
    for pair, position in w.positions.items():
        if position.active_pos == 0:
            continue
        known = session.scalars(
            select(Trade).where(Trade.subscription_id.in_(sub_ids), Trade.symbol == pair)
            .where((Trade.status.in_(("OPEN", "PENDING"))) | (Trade.updated_at >= w.asked_at))
        ).first()  # fmt: skip
        if known is not None:
            continue
        side = "buy" if position.active_pos > 0 else "sell"
        taken = set(session.scalars(select(Order.exchange_order_id).where(
            Order.exchange_order_id.in_([o.id for o in w.futures_orders]))))  # fmt: skip
        fills = [o for o in w.futures_orders if o.market == pair and o.status == "filled" and o.side == side
                 and o.stage not in ("tpsl_exit", "liquidate", "exit") and o.id not in taken]  # fmt: skip
        entry = max(fills, key=lambda o: o.updated_at) if fills else None
        ours = (
            session.scalar(select(Order).where(Order.client_order_id == entry.client_order_id))
            if entry is not None and entry.client_order_id
            else None
        )
        if ours is not None and ours.trade_id is not None:
            trade = session.get(Trade, ours.trade_id)
            _apply_order(ours, entry)
            ours.error = "found on the exchange after it was given up: linked back to its trade"
            trade.status, trade.quantity, trade.entry_price = "OPEN", entry.filled_quantity, entry.avg_price
            trade.entry_fee = trade.fees = entry.fee_amount
            trade.entry_time = entry.updated_at or now
            trade.flags = [*trade.flags, "RELINKED"]
            report.count("position_relinked")
            continue
        owner = next((s for s in subs if s.symbol == pair), None)
        if owner is None:
            report.count("position_unknown_no_subscription")
            continue
        exact = entry is not None and entry.filled_quantity == abs(position.active_pos)
        trade = Trade(subscription_id=owner.id, strategy_id=owner.strategy_id, user_id=owner.user_id, symbol=pair,
                      market_type="futures", side="LONG" if position.active_pos > 0 else "SHORT",
                      quantity=abs(position.active_pos), leverage=position.leverage, entry_price=position.avg_price,
                      take_profit=position.take_profit_trigger, stop_loss=position.stop_loss_trigger, status="OPEN",
                      entry_fee=entry.fee_amount if exact else Decimal(0), fees=entry.fee_amount if exact else Decimal(0),
                      entry_time=(entry.updated_at if exact else position.updated_at) or now,
                      flags=["ADOPTED"] if exact else ["ADOPTED", "ADOPTED_FEE_UNKNOWN"])  # fmt: skip
        session.add(trade)
        session.flush()
        if exact:
            session.add(Order(subscription_id=owner.id, trade_id=trade.id, leg="ENTRY",
                              client_order_id=(entry.client_order_id or f"adopt-{entry.id}")[:36],
                              exchange_order_id=entry.id, market=pair, side=side, order_type=entry.order_type,
                              quantity=entry.total_quantity, filled_quantity=entry.filled_quantity,
                              avg_price=entry.avg_price, fee=entry.fee_amount, status="FILLED", raw_last_response=entry.raw,
                              error="adopted: a position on the exchange the store did not know"))  # fmt: skip
        session.flush()
        report.count("position_adopted")


def _unprotected_futures(session: Session, w: AccountWork) -> list[tuple[Trade, Any]]:
    """Open futures trades whose exchange position lacks a TP/SL trigger the trade has a level for."""
    if w.positions is None:
        return []
    out = []
    for stale in w.futures_trades:
        trade = session.get(Trade, stale.id)
        position = w.positions.get(trade.symbol)
        if trade.status != "OPEN" or position is None or position.active_pos == 0:
            continue
        if (trade.take_profit is not None and position.take_profit_trigger is None) or (
            trade.stop_loss is not None and position.stop_loss_trigger is None
        ):
            out.append((trade, position))
    return out


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


def _stop_outs(session: Session, prices: dict[str, Decimal], report: ReconcileReport,
               subscription_ids: list[int] | None = None) -> list[fanout.Job]:  # fmt: skip
    """Spot LONG trades whose stop was crossed: STOP_LOSS market-sell intents. Each is a small state
    machine run by `send_all` against the exchange's truth: cancel the take profit and confirm it is
    cancelled (or filled: then no sell), only then sell; anything unconfirmed leaves the stop armed
    (INTENT) for the next pass. No failed call ever ends it."""
    stops: list[tuple[Order, BrokerCredential, str | None]] = []
    take_profits: dict[int, dict[int, str]] = {}  # strategy id -> open trade id -> TP client id
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == "OPEN", Trade.market_type == "spot", Trade.stop_loss.is_not(None))
    )
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    for trade, cred in session.execute(query).all():
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
        if order.status in ("LOST", "CANCELLED", "REJECTED") and not order.filled_quantity:
            # Never executed (never reached the exchange, or refused): the stop must stay armed.
            order.status = "UNKNOWN"  # asked by client id first, then sent
        if order.status in ("INTENT", "SENDING", "UNKNOWN"):
            if trade.strategy_id not in take_profits:
                take_profits[trade.strategy_id] = fanout._take_profits_of(session, trade.strategy_id)
            tp = take_profits[trade.strategy_id].get(trade.id)
            stops.append((order, cred, tp))
    session.flush()
    return [fanout.Job(fanout.Intent.of(order), "spot", cred, cancel_first=tp, on_defer="INTENT")
            for order, cred, tp in stops]  # fmt: skip


def _restore_take_profits(session: Session, prices: dict[str, Decimal], stopping: set[int], report: ReconcileReport,
                          subscription_ids: list[int] | None = None) -> list[fanout.Job]:  # fmt: skip
    """An open spot trade without a live take profit on the exchange gets it (re)placed: the same
    client id when it may never have arrived (the exchange refuses a duplicate id, so a late
    original and this resend cannot both exist), a new one after a cancel or refusal."""
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.status == "OPEN", Trade.market_type == "spot", Trade.side == "LONG",
               Trade.take_profit.is_not(None))
        .where(~exists().where(Order.trade_id == Trade.id, Order.leg == "TAKE_PROFIT",
                               Order.status.in_(("OPEN", "PARTIALLY_FILLED", "FILLED"))))
    )  # fmt: skip  # only the unprotected: a pass over 10 000 protected trades reads none of them
    if subscription_ids is not None:
        query = query.where(Trade.subscription_id.in_(subscription_ids))
    rows = session.execute(query).all()
    if not rows:
        return []
    orders: dict[int, list[Order]] = defaultdict(list)
    for order in session.scalars(
        select(Order).where(Order.trade_id.in_([t.id for t, _ in rows])).order_by(Order.id)
    ):
        orders[order.trade_id].append(order)
    jobs = []
    for trade, cred in rows:
        price = prices.get(trade.symbol)
        if trade.id in stopping or (
            trade.stop_loss is not None and (price is None or price <= trade.stop_loss)
        ):
            continue  # its stop-out owns it (or no price: nothing can be said this pass)
        legs = orders[trade.id]
        tps = [o for o in legs if o.leg == "TAKE_PROFIT"]
        if any(o.status in ("OPEN", "PARTIALLY_FILLED", "FILLED") for o in tps):
            continue
        if any(o.leg in ("STOP_LOSS", "EXIT") and o.status in ("SENDING", "UNKNOWN", "OPEN", "PARTIALLY_FILLED")
               for o in legs):  # fmt: skip
            continue  # a sell is in flight: a take profit now would lock the same coins
        held = default_market(trade.symbol).round_quantity(trade.quantity)
        maybe_sent = [o for o in tps if o.status in ("INTENT", "SENDING", "UNKNOWN", "LOST")]
        if maybe_sent:
            tp = maybe_sent[-1]
            if tp.status in ("SENDING", "UNKNOWN") and tp.lookup_misses == 0:
                continue  # not yet found absent: it may be on its way right now
            tp.status = "UNKNOWN" if tp.status != "INTENT" else "INTENT"
        elif len(tps) >= MAX_TAKE_PROFITS:
            if "UNPROTECTED" not in trade.flags:
                trade.flags = [*trade.flags, "UNPROTECTED"]
                report.count("take_profit_given_up")
            continue
        else:
            cid = client_order_id(trade.execution_id or 0, trade.subscription_id, "TAKE_PROFIT", trade.id)
            tp = Order(execution_id=trade.execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                       leg="TAKE_PROFIT", client_order_id=f"{cid}.{len(tps)}"[:36], market=trade.symbol, side="sell",
                       order_type="limit_order", quantity=held, price=trade.take_profit, status="INTENT")  # fmt: skip
            session.add(tp)
        report.count("take_profit_restored")
        jobs.append((tp, cred, held))
    session.flush()
    return [fanout.Job(fanout.Intent.of(tp), "spot", cred, send_quantity=held) for tp, cred, held in jobs]


def _sweep(session: Session, report: ReconcileReport) -> None:
    """An intent never sent (INTENT) whose trade is no longer open will never be sent: settled."""
    swept = session.execute(
        update(Order)
        .where(Order.status == "INTENT",
               Order.trade_id.in_(select(Trade.id).where(Trade.status.in_(("CLOSED", "FAILED")))))
        .values(status="CANCELLED", error="never sent: its trade closed otherwise")
        .execution_options(synchronize_session=False)
    ).rowcount  # fmt: skip
    if swept:
        report.count("intent_settled", swept)


def _close_dead_flattens(session: Session, report: ReconcileReport) -> None:
    """A flatten whose worker died is never left RUNNING: once each of its orders is final (this
    reconciler resolves them) it is closed as FAILED; `live flatten` run again takes over one still
    unresolved."""
    from xcoin_trading.live.locks import holder_is_dead

    for row in session.scalars(
        select(StrategyExecution).where(StrategyExecution.status == "RUNNING",
                                        StrategyExecution.interval_key.like("%_flatten"))
    ):  # fmt: skip
        if not holder_is_dead(row.worker_id or ""):
            continue
        unresolved = session.scalar(
            select(Order.id).where(Order.execution_id == row.id, Order.status.in_(WATCHED)).limit(1)
        )
        if unresolved is None:
            row.status, row.finished_at = "FAILED", utcnow()
            stamp = (row.started_at or row.scheduled_at).strftime("%Y-%m-%dT%H:%M:%SZ")
            row.interval_key = f"{stamp}_{row.id}_flatten"  # gives the strategy's running key up
            row.error = (
                "its worker died; the reconciler resolved its orders: run the flatten again for what is open"
            )
            report.count("flatten_closed")


async def _send_protection(api_url: str, public_url: str, vault, needs: list[tuple[BrokerCredential, int, str, Any, Any]]) -> dict[int, str | None]:  # fmt: skip
    """Position-level TP/SL for futures positions that lack them; {trade id: error or None}.
    create_tpsl refuses a leg that already exists, so a resend after an unknown reply cannot add a second."""
    out: dict[int, str | None] = {}
    async with AsyncCoinDCXClient(api_url, public_url) as base:
        for cred, trade_id, position_id, tp, sl in needs:
            keys = decrypt(vault, cred)
            client = base.with_credentials(Credentials(keys.api_key.reveal(), keys.api_secret.reveal()))
            try:
                answer = await client.futures_create_tpsl(position_id, take_profit=tp, stop_loss=sl)
                errors = [
                    str(v)
                    for v in answer.values()
                    if isinstance(v, ExchangeError) and "already exists" not in str(v)
                ]
                out[trade_id] = "; ".join(errors) or None
            except ExchangeError as exc:
                out[trade_id] = str(exc)[:300]
    return out


def reconcile_once(ctx: LiveContext, now: datetime | None = None, *, audit: bool = False,
                   subscription_ids: list[int] | None = None, protect: bool = True) -> ReconcileReport:  # fmt: skip
    """One reconcile pass over every account with unresolved orders or open futures trades
    (`subscription_ids`: only theirs, as a flatten asks; `protect=False`: no take profit or TP/SL is
    placed, as a flatten that closes the positions next wants)."""
    started = time.perf_counter()
    now = now or utcnow()
    report = ReconcileReport()
    with session_scope(ctx.settings) as session:
        work = list(_load(session, subscription_ids, audit).values())
    report.accounts = len(work)
    if work:
        report.api_calls += asyncio.run(
            _ask_all(ctx.api_url, ctx.public_url, ctx.vault, work, audit, ctx.concurrency)
        )
    protection: list[tuple[BrokerCredential, int, str, Any, Any]] = []
    with session_scope(ctx.settings) as session:
        for w in work:
            if w.error is not None:
                report.failed_accounts += 1
                continue
            _apply_spot(session, w, now, report)
            _apply_futures(session, w, now, report)
            _adopt_positions(session, w, now, report)
            _flag_external(session, w, report)
            for trade, position in _unprotected_futures(session, w) if protect else []:
                tp = trade.take_profit if position.take_profit_trigger is None else None
                sl = trade.stop_loss if position.stop_loss_trigger is None else None
                protection.append((w.credential, trade.id, position.id, tp, sl))
    with session_scope(ctx.settings) as session:
        _settle_pending(session, report, subscription_ids)
        _sweep(session, report)
        if subscription_ids is None:
            _close_dead_flattens(session, report)
    if protection:
        report.api_calls += len(protection)
        for trade_id, error in asyncio.run(
            _send_protection(ctx.api_url, ctx.public_url, ctx.vault, protection)
        ).items():
            with session_scope(ctx.settings) as session:
                trade = session.get(Trade, trade_id)
                flag = "PROTECTION_REFUSED" if error else "PROTECTION_RESTORED"
                if flag not in trade.flags:
                    trade.flags = [*trade.flags, flag]
                report.count("futures_protection_refused" if error else "futures_protection_restored")
    with session_scope(ctx.settings) as session:
        needs_price = session.scalar(
            select(Trade.id)
            .where(Trade.status == "OPEN", Trade.market_type == "spot",
                   Trade.stop_loss.is_not(None) | Trade.take_profit.is_not(None))
            .limit(1)
        )  # fmt: skip
    if needs_price is not None:
        report.api_calls += 1
        try:
            prices = asyncio.run(_ticker(ctx.api_url, ctx.public_url))
        except ExchangeError:  # no price is not "not crossed" either: the stops are watched next pass
            report.count("ticker_unavailable")
            prices = {}
        with session_scope(ctx.settings) as session:
            jobs = _stop_outs(session, prices, report, subscription_ids)
            if protect:
                stopping = {j.order.trade_id for j in jobs}
                jobs += _restore_take_profits(session, prices, stopping, report, subscription_ids)
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
        if job.order.leg == "STOP_LOSS" and job.error is not None and not job.ambiguous:
            # Refused (e.g. the coins are not free yet): not executed, so the stop stays armed.
            job.deferred, job.error = f"the sell was refused, sent again next pass: {job.error}"[:500], None
    fanout.record(session, jobs, now, result)
    for job in jobs:
        if job.deferred is not None:
            report.count("stop_deferred")
        tp = job.take_profit_seen
        if tp is not None and tp.status == "filled" and job.order.trade_id:
            trade = session.get(Trade, job.order.trade_id)
            if "RACE" not in trade.flags:  # the take profit filled before the stop's cancel reached it
                trade.flags = [*trade.flags, "RACE"]
            report.count("race")
        if job.order.leg == "STOP_LOSS" and job.result is not None and job.result.status == "filled":
            trade = session.get(Trade, job.order.trade_id)
            if trade.status == "OPEN":
                close_trade(session, trade, exit_price=job.result.avg_price, exit_fee=job.result.fee_amount,
                            exit_type="STOP_LOSS", exit_time=job.result.updated_at or now)  # fmt: skip
                report.count("closed_stop_loss")
