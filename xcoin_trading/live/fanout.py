"""Fan one signal out to every subscriber: plan in the store, send concurrently, record the answers.

1. Plan (one transaction): per subscription, size the position with `risk.py`, check the limits,
   and write the trade and its order intent with a deterministic `client_order_id` — or record why
   not. Intents are written as SENDING (committed only to be sent at once) in two bulk INSERTs;
   nothing is sent before they are committed.
2. Send with bounded concurrency over aiohttp; each account's keys are decrypted just before its
   own request. `create_order_idempotent` never sends twice: after an ambiguous failure it asks
   the exchange by client id first.
3. Record every answer (one transaction, bulk UPDATEs by id). One subscriber's failure is recorded
   on that subscriber and never stops the others.

A resumed execution (its worker died) resolves its intents: SENDING/UNKNOWN ones are looked up by
client id before anything is sent again; INTENT ones (written apart from their send, e.g. by the
reconciler's stop-outs, and marked SENDING just before it) were never sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from xcoin_trading.errors import ValidationError, XcoinError
from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AiohttpPool, AsyncCoinDCXClient
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.live.runner import Signal
from xcoin_trading.live.trades import Exit, client_order_id, close_trades
from xcoin_trading.risk import check_entry_limits, entry_cost, fit_to_balance, size_position
from xcoin_trading.services.credentials import decrypt
from xcoin_trading.store.db import insert_returning_ids, update_by_id
from xcoin_trading.store.models import BrokerCredential, Order, Subscription, Trade
from xcoin_trading.vault import Vault

OPEN_TRADE = ("PENDING", "OPEN")
UNRESOLVED = ("INTENT", "SENDING", "UNKNOWN")


@dataclass(slots=True)
class Intent:
    """An order row as the fan-out uses it: thousands per candle, so plain objects written and
    updated in bulk by id, not ORM instances tracked one by one."""

    id: int
    subscription_id: int | None
    trade_id: int | None
    leg: str
    client_order_id: str
    market: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    status: str

    @classmethod
    def of(cls, order: Order) -> Intent:
        return cls(**{name: getattr(order, name) for name in cls.__slots__})

    @classmethod
    def inserted(cls, order_id: int, row: dict[str, Any]) -> Intent:
        """The intent of a row just inserted by `insert_returning_ids` as `order_id`."""
        return cls(id=order_id, **{name: row[name] for name in cls.__slots__ if name != "id"})


@dataclass
class Job:
    """One order to send for one subscriber; `order` is its intent row."""

    order: Intent
    kind: str  # spot / futures
    credential: BrokerCredential
    leverage: Decimal | None = None  # futures entry: set on the pair first
    take_profit: Decimal | None = None  # futures entry: attached TP
    stop_loss: Decimal | None = None  # futures entry: attached SL
    cancel_first: str | None = None  # spot exit: client id of the take profit to cancel
    result: ExchangeOrder | None = None
    error: str | None = None
    ambiguous: bool = False  # the failure leaves it unknown whether the order exists
    cancelled_take_profit: bool = False
    skipped: str | None = None  # not sent, on purpose (the reason is recorded on the order)
    after: Job | None = None  # spot take profit: the entry it protects, sent just before it
    market: Market | None = None  # rounding of a take profit to what the entry filled
    send_quantity: Decimal | None = None  # what was actually sent, when not the intent's quantity
    deferred: str | None = None  # not sent now (its take profit still rests): left armed / reported
    take_profit_seen: ExchangeOrder | None = None  # the take profit as the exchange showed it after cancel
    on_defer: str = "CANCELLED"  # the status of a deferred order: a watched stop stays INTENT (armed)

    # Decided from the row as loaded, before `mark_sending`: only an intent that may already have been
    # sent (a dead worker's SENDING, an UNKNOWN) is looked up first. A fresh one costs 1 request, not 3.
    lookup_first: bool | None = None

    def __post_init__(self) -> None:
        if self.lookup_first is None:
            self.lookup_first = self.order.status in ("SENDING", "UNKNOWN")


@dataclass
class FanoutResult:
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)  # subscription id -> outcome
    trades_created: int = 0
    timings: dict[str, int] = field(default_factory=dict)  # wall ms per phase
    resumed: bool = False  # the execution already had orders (a dead worker's): settle them all
    shrunk: dict[int, str] = field(default_factory=dict)  # subscription id -> why its entry is smaller

    def note(self, subscription_id: int, status: str, reason: str | None = None, **extra: Any) -> None:
        if subscription_id in self.shrunk:
            extra = {"balance": self.shrunk[subscription_id], **extra}
        self.outcomes[subscription_id] = {"status": status, **({"reason": reason} if reason else {}), **extra}


@dataclass(frozen=True)
class PlanInput:
    execution_id: int
    strategy_id: int
    signal: Signal
    market: Market
    fee_rate: Decimal
    now: datetime
    allow_new: bool  # False on a resumed execution past its staleness limit: only resolve intents
    skip_trades: frozenset[int] = frozenset()  # a flatten: trades whose earlier exit is still unresolved
    every_subscription: bool = False  # a flatten: paused and inactive subscriptions' trades close too
    # Free balance of the quote/margin currency per broker credential (one account), asked for once
    # this candle; an account missing here could not be asked and is bounded by its capital only.
    free_balances: Mapping[int, Decimal] | None = None
    # A shard of the fan-out (live/shards.py): a condition on Subscription; None = every subscriber.
    only: Any = None


def _subscribers(
    session: Session, strategy_id: int, every: bool = False, only: Any = None
) -> list[tuple[Subscription, BrokerCredential | None]]:
    query = (
        select(Subscription, BrokerCredential)
        .outerjoin(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Subscription.strategy_id == strategy_id)
        .order_by(Subscription.id)
    )
    if not every:
        query = query.where(Subscription.is_active.is_(True), Subscription.is_paused.is_(False))
    if only is not None:
        query = query.where(only)
    rows = session.execute(query).all()
    return [(s, c) for s, c in rows]


def _grouped(session: Session, query) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for row in session.scalars(query):
        out.setdefault(row.subscription_id, []).append(row)
    return out


def _pnl_today(session: Session, subscription_ids: list[int], day_start: datetime) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for sub_id, pnl in session.execute(
        select(Trade.subscription_id, Trade.pnl).where(
            Trade.subscription_id.in_(subscription_ids),
            Trade.status == "CLOSED",
            Trade.exit_time >= day_start,
        )
    ):
        out[sub_id] = out.get(sub_id, Decimal(0)) + (pnl or 0)
    return out


def _open_counts(session: Session, subscription_ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(Trade.subscription_id, func.count())
        .where(Trade.subscription_id.in_(subscription_ids), Trade.status.in_(OPEN_TRADE))
        .group_by(Trade.subscription_id)
    ).all()
    return dict(rows)


def _take_profits_of(session: Session, strategy_id: int) -> dict[int, str]:
    """Open trade id -> client id of its live take profit, for every open trade of the strategy."""
    rows = session.execute(
        select(Order.trade_id, Order.client_order_id)
        .join(Trade, Trade.id == Order.trade_id)
        .where(
            Trade.strategy_id == strategy_id,
            Trade.status == "OPEN",
            Order.leg == "TAKE_PROFIT",
            Order.status.in_(("OPEN", "PARTIALLY_FILLED", *UNRESOLVED)),
        )
        .order_by(Order.id)
    ).all()
    out: dict[int, str] = {}
    for trade_id, cid in rows:
        out.setdefault(trade_id, cid)
    return out


@dataclass
class _NewOrder:
    """An order planned this candle, inserted with the others once every subscriber is planned."""

    row: dict[str, Any]
    credential: BrokerCredential
    job_kwargs: dict[str, Any]
    trade: dict[str, Any] | None = None  # the trade it opens (its id is known after the insert)
    after: _NewOrder | None = None  # a spot take profit: the entry it protects
    job: Job | None = None


def plan(session: Session, p: PlanInput, result: FanoutResult) -> list[Job]:
    """Write intents (and trades) for every subscriber; return what must be sent."""
    market, signal, kind = p.market, p.signal, p.market.kind
    subs = _subscribers(session, p.strategy_id, p.every_subscription, p.only)
    sub_ids = [s.id for s, _ in subs]
    mine = select(Order).where(Order.execution_id == p.execution_id)
    if p.only is not None:  # another shard's orders are not this shard's to resume
        mine = mine.where(Order.subscription_id.in_(select(Subscription.id).where(p.only)))
    existing = {o.client_order_id: o for o in session.scalars(mine)}
    result.resumed = result.resumed or bool(existing)
    open_trades = _grouped(
        session,
        select(Trade).where(Trade.strategy_id == p.strategy_id, Trade.status == "OPEN").order_by(Trade.id),
    )
    counts = _open_counts(session, sub_ids)
    take_profits = _take_profits_of(session, p.strategy_id) if market.kind == "spot" else {}
    pnl_today = _pnl_today(session, sub_ids, p.now.replace(hour=0, minute=0, second=0, microsecond=0))
    entry_side = {"LONG": "buy", "SHORT": "sell"}.get(signal.action)
    jobs: list[Job] = []  # intents a dead worker left unresolved
    new: list[_NewOrder] = []  # per subscriber: its exits, then its entry
    new_take_profits: list[_NewOrder] = []
    remaining = dict(p.free_balances or {})  # what this candle's entries have not yet taken, per account

    def intent(cid: str, fields: dict[str, Any], job_kwargs: dict[str, Any]) -> _NewOrder | None:
        """Plan the order `cid` if new (sent after commit); resolve it if left unresolved."""
        order = existing.get(cid)
        if order is None:
            planned = _NewOrder(_order_row(p, market, cid, "market_order", fields), cred, job_kwargs)
            new.append(planned)
            return planned
        if order.status in UNRESOLVED:
            jobs.append(Job(Intent.of(order), kind, cred, **job_kwargs))
        return None

    for sub, cred in subs:
        if cred is None or not cred.is_active:
            result.note(sub.id, "REFUSED", "no active broker keys")
            continue
        # EXIT, or an entry opposite to an open trade, closes that trade first (as the backtest does).
        closing = [
            t
            for t in open_trades.get(sub.id, [])
            if (signal.action == "EXIT" or (entry_side and t.side != signal.action))
            and t.id not in p.skip_trades
        ]
        for trade in closing:
            cid = client_order_id(p.execution_id, sub.id, "EXIT", trade.id)
            if cid not in existing and not p.allow_new:
                continue
            intent(
                cid,
                {"subscription_id": sub.id, "trade_id": trade.id, "leg": "EXIT", "quantity": trade.quantity,
                 "side": "sell" if trade.side == "LONG" else "buy"},
                {"cancel_first": take_profits.get(trade.id) if kind == "spot" else None},
            )  # fmt: skip
            counts[sub.id] = counts.get(sub.id, 0) - 1
        if signal.action == "EXIT":
            if not closing:
                result.note(sub.id, "NO_POSITION")
            continue
        if kind == "spot" and signal.action == "SHORT":
            result.note(sub.id, "REFUSED", "spot markets are LONG only; SHORT needs a futures market")
            continue
        leverage = sub.leverage if kind == "futures" else Decimal(1)
        entry_kwargs = {"leverage": leverage if kind == "futures" else None}
        cid = client_order_id(p.execution_id, sub.id, "ENTRY")
        if cid in existing:  # resumed: resolve the intent, never size again
            order = existing[cid]
            trade = session.get(Trade, order.trade_id)
            if order.status in UNRESOLVED:
                kw = (
                    {**entry_kwargs, "take_profit": trade.take_profit, "stop_loss": trade.stop_loss}
                    if kind == "futures"
                    else {}
                )
                jobs.append(Job(Intent.of(order), kind, cred, **kw))
            continue
        if not p.allow_new:
            result.note(sub.id, "SKIPPED", "resumed after the staleness limit: no new entries")
            continue
        limits = check_entry_limits(
            open_positions=max(0, counts.get(sub.id, 0)),
            max_open_positions=sub.max_positions,
            realised_pnl_today=pnl_today.get(sub.id, Decimal(0)),
            capital=sub.capital,
            max_daily_loss_pct=min(Decimal(1), sub.max_daily_loss / sub.capital)
            if sub.max_daily_loss
            else None,
        )
        if not limits.allowed:
            result.note(sub.id, "REFUSED", limits.reason)
            continue
        try:
            size = size_position(
                capital=sub.capital, risk_per_trade=sub.risk_per_trade, entry_price=signal.price,
                stop_loss=signal.stop_loss, leverage=leverage, fee_rate=p.fee_rate, market=market,
            )  # fmt: skip
        except ValidationError as exc:
            result.note(sub.id, "REFUSED", str(exc))
            continue
        quantity = size.quantity
        if cred.id in remaining:  # several subscriptions of one account share its balance, in id order
            free = remaining[cred.id]
            try:
                quantity = fit_to_balance(quantity, signal.price, leverage, p.fee_rate, free, market)
            except ValidationError as exc:
                result.note(sub.id, "REFUSED", f"insufficient balance: {free} {market.base} free on the account "
                            f"for this candle's entries; what fits is refused: {exc}")  # fmt: skip
                continue
            if quantity < size.quantity:
                result.shrunk[sub.id] = (
                    f"entry shrunk from {size.quantity} to {quantity} {market.target}: "
                    f"{free} {market.base} free on the account"
                )
            remaining[cred.id] = free - entry_cost(quantity, signal.price, leverage, p.fee_rate)
        levels = {k: None if v is None else market.round_price(v) for k, v in
                  (("take_profit", signal.take_profit), ("stop_loss", signal.stop_loss))}  # fmt: skip
        entry = intent(
            cid,
            {"subscription_id": sub.id, "leg": "ENTRY", "side": entry_side, "quantity": quantity,
             "price": signal.price},
            {**entry_kwargs, **(levels if kind == "futures" else {})},
        )  # fmt: skip
        entry.trade = {
            "subscription_id": sub.id, "strategy_id": p.strategy_id, "user_id": sub.user_id,
            "execution_id": p.execution_id, "symbol": market.symbol, "market_type": kind, "side": signal.action,
            "quantity": quantity, "leverage": leverage, "status": "PENDING", **levels,
        }  # fmt: skip
        if kind == "spot" and levels["take_profit"] is not None:
            # The take profit's intent is written now too, and sent as soon as its entry fills.
            tp_cid = client_order_id(p.execution_id, sub.id, "TAKE_PROFIT")
            tp_row = _order_row(p, market, tp_cid, "limit_order", {"subscription_id": sub.id, "leg": "TAKE_PROFIT",
                                "side": "sell", "quantity": quantity, "price": levels["take_profit"]})  # fmt: skip
            new_take_profits.append(_NewOrder(tp_row, cred, {"market": market}, after=entry))

    _insert(session, new, new_take_profits, kind)
    result.trades_created += sum(1 for n in new if n.trade is not None)
    # Per subscriber, send_all keeps this order: exits, then entries, then their take profits.
    return jobs + [n.job for n in new] + [n.job for n in new_take_profits]


def _order_row(
    p: PlanInput, market: Market, cid: str, order_type: str, fields: dict[str, Any]
) -> dict[str, Any]:
    # Written as SENDING: it is committed only to be sent at once, so after a crash it is asked for
    # by client id before anything is sent again (one UPDATE fewer per order than INTENT → SENDING).
    return {"execution_id": p.execution_id, "trade_id": None, "client_order_id": cid, "market": market.symbol,
            "order_type": order_type, "price": None, "status": "SENDING", "attempts": 1, **fields}  # fmt: skip


def _insert(session: Session, new: list[_NewOrder], take_profits: list[_NewOrder], kind: str) -> None:
    """Two INSERTs (trades, then orders), each of every row at once, ids returned in row order."""
    opening = [n for n in new if n.trade is not None]
    if opening:
        trade_ids = insert_returning_ids(session, Trade, [n.trade for n in opening])
        for n, trade_id in zip(opening, trade_ids, strict=True):
            n.row["trade_id"] = trade_id
    for tp in take_profits:
        tp.row["trade_id"] = tp.after.row["trade_id"]
    planned = new + take_profits
    if not planned:
        return
    order_ids = insert_returning_ids(session, Order, [n.row for n in planned])
    for n, order_id in zip(planned, order_ids, strict=True):
        n.job = Job(Intent.inserted(order_id, n.row), kind, n.credential, lookup_first=False, **n.job_kwargs)
    for tp in take_profits:
        tp.job.after = tp.after.job


def mark_sending(session: Session, jobs: list[Job]) -> None:
    """One UPDATE before any request: after a crash, SENDING means "ask the exchange first"."""
    fresh = [j.order for j in jobs if j.order.status == "INTENT"]
    for start in range(0, len(fresh), 500):
        session.execute(
            update(Order)
            .where(Order.id.in_([o.id for o in fresh[start : start + 500]]))
            .values(status="SENDING", attempts=Order.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    for order in fresh:
        order.status = "SENDING"


async def _send_one(base: AsyncCoinDCXClient, vault: Vault, job: Job, sem: asyncio.Semaphore) -> None:
    order = job.order
    async with sem:
        try:
            keys = decrypt(vault, job.credential)
            client = base.with_credentials(Credentials(keys.api_key.reveal(), keys.api_secret.reveal()))
            if job.lookup_first:
                found = await client.find_order_by_client_id(
                    order.client_order_id, order.market, kind=job.kind
                )
                if found is not None:
                    job.result = found
                    return
            if job.cancel_first:
                try:
                    cancelled, tp = await _cancel_confirmed(client, job.cancel_first, order.market)
                except ExchangeError as exc:
                    job.deferred = (
                        f"could not confirm its take profit {job.cancel_first} is cancelled: {exc}"[:500]
                    )
                    return
                job.take_profit_seen = tp
                if tp is not None and tp.status == "filled":
                    job.skipped = "not needed: its take profit filled first"
                    return
                if tp is not None and tp.status not in ("cancelled", "partially_cancelled", "rejected"):
                    # The coins are still locked by the resting take profit: a sell now is refused.
                    job.deferred = f"its take profit {job.cancel_first} still rests (the cancel failed)"
                    return
                job.cancelled_take_profit = cancelled or tp is not None
            if job.after is not None:  # a spot take profit: sell what the entry actually bought
                entry = job.after.result
                if entry is None or entry.filled_quantity <= 0:
                    job.skipped = "its entry did not fill; a take profit is placed once it has"
                    return
                job.send_quantity = job.market.round_quantity(entry.filled_quantity)
            if job.kind == "futures" and order.leg == "EXIT":
                held = await _futures_exit_quantity(client, order)
                if held <= 0:
                    # The exchange's own TP/SL (or a liquidation) closed it first: an exit now would
                    # open a new position the other way. The reconciler records the real close.
                    job.skipped = "the exchange position is already closed; the reconciler records its close"
                    return
                quantity = min(order.quantity, held)  # never more than is still open
            else:
                quantity = job.send_quantity or order.quantity
            extra: dict[str, Any] = {}
            if job.kind == "futures" and order.leg == "ENTRY":
                if job.leverage is not None:
                    try:
                        await client.futures_ensure_leverage(order.market, job.leverage)
                    except ExchangeError as exc:  # the entry itself was never sent: not executed
                        job.error = (
                            f"leverage {job.leverage} could not be confirmed on {order.market}: {exc}"[:500]
                        )
                        return
                    extra["leverage"] = job.leverage
                extra |= {"take_profit_price": job.take_profit, "stop_loss_price": job.stop_loss}
            job.result = await client.create_order_idempotent(
                order.market, order.side, order.order_type, quantity, order.price if order.order_type == "limit_order" else None,
                client_order_id=order.client_order_id, kind=job.kind, **extra,
            )  # fmt: skip
        except ExchangeError as exc:
            job.error, job.ambiguous = str(exc)[:500], exc.ambiguous
        except XcoinError as exc:
            job.error = str(exc)[:500]
        except Exception as exc:  # noqa: BLE001 - one subscriber never stops the others
            job.error, job.ambiguous = f"{type(exc).__name__}: {exc}"[:500], True


async def _cancel_confirmed(
    client: AsyncCoinDCXClient, client_order_id: str, market: str
) -> tuple[bool, ExchangeOrder | None]:
    """Cancel a take profit: (True, None) when the exchange said it cancelled it; after any failure
    (a 503 may have cancelled it or not, a refusal may mean it filled) (False, what the exchange
    then says it is, None when it has no such order). A failed look-up raises: "could not ask" is
    never "cancelled"."""
    try:
        await client.cancel_order(client_order_id=client_order_id)
        return True, None
    except ExchangeError:
        pass  # executed, not executed or unknown: the look-up tells which
    return False, await client.find_order_by_client_id(client_order_id, market, kind="spot")


async def _futures_exit_quantity(client: AsyncCoinDCXClient, order: Order) -> Decimal:
    """How much of the position this exit closes is still open on the exchange (0 when flat or
    already the other way round)."""
    direction = 1 if order.side == "sell" else -1  # selling closes a long (a positive position)
    held = sum((p.active_pos for p in await client.futures_positions(pairs=[order.market]) if p.pair == order.market),
               Decimal(0))  # fmt: skip
    return max(Decimal(0), held * direction)


async def send_all(
    api_url: str, public_url: str, vault: Vault, jobs: list[Job], concurrency: int = 200,
    pool: AiohttpPool | None = None,
) -> None:  # fmt: skip
    """Send every job, at most `concurrency` at once, over `pool` (else a pool of its own).

    One subscriber's jobs go one after the other, in plan order: the exit that closes a trade is
    answered before the reversing entry sets leverage on the same pair."""
    own = pool is None
    pool = pool or AiohttpPool(concurrency)
    base = AsyncCoinDCXClient(api_url, public_url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)
    per_subscriber: dict[int | None, list[Job]] = {}
    for job in jobs:
        per_subscriber.setdefault(job.order.subscription_id, []).append(job)

    async def in_order(own_jobs: list[Job]) -> None:
        for job in own_jobs:
            await _send_one(base, vault, job, sem)

    try:
        await asyncio.gather(*(in_order(own_jobs) for own_jobs in per_subscriber.values()))
    finally:
        if own:
            await pool.aclose()


async def free_balances(
    base_url: str, public_url: str, vault: Vault, credentials: list[BrokerCredential], currency: str,
    concurrency: int, pool: AiohttpPool,
) -> dict[int, Decimal]:  # fmt: skip
    """Free `currency` per account, one balances call each, all at once. An account whose call fails
    is left out (bounded by its capital alone): a failed read must not stop its trading."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[int, Decimal] = {}

    base = AsyncCoinDCXClient(base_url, public_url, http_client=pool)

    async def ask(cred: BrokerCredential) -> None:
        async with sem:
            try:
                keys = decrypt(vault, cred)
                client = base.with_credentials(Credentials(keys.api_key.reveal(), keys.api_secret.reveal()))
                out[cred.id] = (await client.balance(currency)).balance
            except (ExchangeError, XcoinError):
                pass

    await asyncio.gather(*(ask(c) for c in credentials))
    return out


def order_status_of(ex: ExchangeOrder) -> str:
    if ex.status == "filled":
        return "FILLED"
    if ex.status in ("rejected", "cancelled", "partially_cancelled"):
        return {"rejected": "REJECTED", "cancelled": "CANCELLED", "partially_cancelled": "CANCELLED"}[
            ex.status
        ]
    return "PARTIALLY_FILLED" if ex.filled_quantity > 0 else "OPEN"


def record(session: Session, jobs: list[Job], now: datetime, result: FanoutResult) -> None:
    """Write each answer to its order and trade; close trades whose exit filled. All in bulk."""
    cancelled: list[str] = []
    opened: list[dict[str, Any]] = []  # trades whose entry answered
    exits: dict[int, tuple[int, Exit]] = {}  # trade id -> (subscription id, its exit fill)
    orders = [_record_one(job, cancelled, opened, exits, now, result) for job in jobs]
    update_by_id(session, Order, orders)
    for job in jobs:  # what the exchange said of a take profit an exit cancelled (rare: one per exit)
        tp = job.take_profit_seen
        if tp is None:
            continue
        session.execute(
            update(Order)
            .where(Order.client_order_id == job.cancel_first)
            .values(status=order_status_of(tp), exchange_order_id=tp.id, filled_quantity=tp.filled_quantity,
                    avg_price=tp.avg_price or None, fee=tp.fee_amount, raw_last_response=tp.raw, updated_at=now)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if tp.status == "filled" and job.order.trade_id:
            exits[job.order.trade_id] = (job.order.subscription_id, Exit(tp.avg_price, tp.fee_amount, "TAKE_PROFIT",
                                                                          tp.updated_at or now))  # fmt: skip
    update_by_id(session, Trade, opened)
    closed = close_trades(session, {trade_id: fill for trade_id, (_, fill) in exits.items()}, now)
    for trade_id, pnl in closed.items():
        sub_id = exits[trade_id][0]
        if result.outcomes.get(sub_id, {}).get("status") != "PLACED":  # a reversal reports its new entry
            result.note(sub_id, "CLOSED", trade_id=trade_id, pnl=str(pnl))
    for start in range(0, len(cancelled), 500):
        session.execute(
            update(Order)
            .where(Order.client_order_id.in_(cancelled[start : start + 500]))
            .values(status="CANCELLED", updated_at=now)
            .execution_options(synchronize_session=False)
        )


def _record_one(job: Job, cancelled: list[str], opened: list[dict[str, Any]], exits: dict[int, tuple[int, Exit]],
                now: datetime, result: FanoutResult) -> dict[str, Any]:  # fmt: skip
    """The order's new column values; its trade's go to `opened` (entries) or `exits` (filled exits)."""
    order = job.order
    sub_id = order.subscription_id
    entry_of = order.trade_id if order.leg == "ENTRY" else None
    protective = order.leg == "TAKE_PROFIT"  # its outcome belongs to the entry's, not in its place
    if job.deferred is not None:
        # Never sent: a stop stays armed (INTENT, sent again next pass); an exit is reported not done.
        order.status = job.on_defer
        if not protective:
            result.note(sub_id, "NOT_CLOSED", job.deferred)
        return {"id": order.id, "status": order.status, "error": job.deferred, "updated_at": now}
    if job.skipped is not None:
        order.status = "CANCELLED"
        if not protective:
            result.note(sub_id, "NO_POSITION", job.skipped)
        return {"id": order.id, "status": order.status, "error": job.skipped, "updated_at": now}
    if job.error is not None:
        # "Could not ask" is unknown, not failed: the reconciler resolves UNKNOWN by client id.
        order.status = "UNKNOWN" if job.ambiguous else "REJECTED"
        if order.status == "REJECTED" and entry_of:
            opened.append({"id": entry_of, "status": "FAILED", "updated_at": now})
        if protective:
            result.outcomes.setdefault(sub_id, {"status": "PLACED"})["take_profit_error"] = job.error
        else:
            result.note(sub_id, "UNKNOWN" if job.ambiguous else "FAILED", job.error)
        return {"id": order.id, "status": order.status, "error": job.error, "updated_at": now}
    if job.send_quantity is not None:
        order.quantity = job.send_quantity
    if job.cancelled_take_profit:
        cancelled.append(job.cancel_first)
    ex = job.result
    order.status = order_status_of(ex)
    answer = {
        "id": order.id, "status": order.status, "exchange_order_id": ex.id,
        "quantity": ex.total_quantity or order.quantity,  # the exchange's, e.g. of an order found by client id
        "filled_quantity": ex.filled_quantity, "avg_price": ex.avg_price or None, "fee": ex.fee_amount,
        "raw_last_response": ex.raw, "updated_at": now,
    }  # fmt: skip
    if entry_of:
        if ex.filled_quantity > 0:
            opened.append({"id": entry_of, "status": "OPEN", "quantity": ex.filled_quantity,
                           "entry_price": ex.avg_price, "entry_fee": ex.fee_amount, "fees": ex.fee_amount,
                           "entry_time": ex.updated_at or now, "updated_at": now})  # fmt: skip
        elif order.status in ("REJECTED", "CANCELLED"):
            opened.append({"id": entry_of, "status": "FAILED", "updated_at": now})
        result.note(sub_id, "PLACED", trade_id=entry_of, order_status=order.status)
    elif order.leg == "EXIT" and order.trade_id and order.status == "FILLED":
        exits[order.trade_id] = (sub_id, Exit(ex.avg_price, ex.fee_amount, "SIGNAL", ex.updated_at or now))
    return answer


def spot_take_profit_jobs(session: Session, execution_id: int, market: Market, only: Any = None) -> list[Job]:
    """Every spot LONG of this execution that is open gets its take profit as a resting limit sell
    (intent first). Read from the store, so a resumed execution finishes what a dead worker began.

    The stop loss of a spot trade is not on the book (one sell cannot lock the same coins twice):
    the reconciler watches it."""
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.execution_id == execution_id, Trade.status == "OPEN", Trade.take_profit.is_not(None),
               Trade.market_type == "spot", Trade.side == "LONG")
        .order_by(Trade.id)
    )  # fmt: skip
    rows = session.execute(query if only is None else query.where(only)).all()
    existing = {
        o.trade_id: o
        for o in session.scalars(
            select(Order).where(Order.execution_id == execution_id, Order.leg == "TAKE_PROFIT")
        )
    }
    # A take profit whose entry never filled cannot exist on the exchange (no coins to sell): settle it.
    settle = update(Order).where(
        Order.execution_id == execution_id, Order.leg == "TAKE_PROFIT", Order.status.in_(UNRESOLVED),
        Order.trade_id.in_(select(Trade.id).where(Trade.execution_id == execution_id, Trade.status == "FAILED")),
    )  # fmt: skip
    if only is not None:
        settle = settle.where(Order.subscription_id.in_(select(Subscription.id).where(only)))
    session.execute(
        settle
        .values(status="CANCELLED", error="its entry did not fill")
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    planned: list[tuple[Order, BrokerCredential, Decimal]] = []
    for trade, credential in rows:
        tp = existing.get(trade.id)
        held = market.round_quantity(trade.quantity)  # what the entry filled, not what was planned
        if tp is None:
            tp = Order(
                execution_id=execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                leg="TAKE_PROFIT", client_order_id=client_order_id(execution_id, trade.subscription_id, "TAKE_PROFIT"),
                market=market.symbol, side="sell", order_type="limit_order", quantity=held, price=trade.take_profit,
                status="INTENT",
            )  # fmt: skip
            session.add(tp)
        if tp.status == "LOST":
            # The reconciler found that it never reached the exchange (its worker died first): the
            # open position must not stay without it. Asked for by client id once more, then sent.
            tp.status = "UNKNOWN"
        if tp.status in UNRESOLVED:
            planned.append((tp, credential, held))
    session.flush()
    return [Job(Intent.of(tp), "spot", credential, send_quantity=held) for tp, credential, held in planned]
