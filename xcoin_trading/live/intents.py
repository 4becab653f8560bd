"""Fan-out phase 1, intents: per subscriber, size the position with `risk.py`, check the limits and
write the trade and its order intent with a deterministic `client_order_id`, or record why not.

All in one transaction, in two bulk INSERTs; intents are written as SENDING (committed only to be
sent at once) and nothing is sent before they are committed. A resumed execution (its worker died)
resolves its intents: SENDING/UNKNOWN ones are looked up by client id before anything is sent again;
INTENT ones (written apart from their send, e.g. by the reconciler's stop-outs, and marked SENDING
just before it) were never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.live.dispatch import Intent, Job
from xcoin_trading.live.record import FanoutResult
from xcoin_trading.live.runner import Signal
from xcoin_trading.live.trades import client_order_id
from xcoin_trading.risk import check_entry_limits, entry_cost, fit_to_balance, size_position
from xcoin_trading.services.credentials import SEALED_COLUMNS, SealedKeys
from xcoin_trading.store.db import among, insert_returning_ids
from xcoin_trading.store.lifecycle import (
    OPEN_TRADE,
    PENDING,
    UNRESOLVED,
    WATCHED,
    Leg,
    OrderStatus,
    TradeStatus,
)
from xcoin_trading.store.models import BrokerCredential, Order, Subscription, Trade


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


class _Subscriber(NamedTuple):
    """What planning reads of a subscription (thousands per candle: plain rows, not ORM instances)."""

    id: int
    user_id: int
    capital: Decimal
    risk_per_trade: Decimal
    leverage: Decimal
    max_positions: int
    max_daily_loss: Decimal | None


_SUBSCRIBER_COLUMNS = [getattr(Subscription, name) for name in _Subscriber._fields]


def _subscribers(
    session: Session, strategy_id: int, every: bool = False, only: Any = None
) -> list[tuple[_Subscriber, SealedKeys | None]]:
    """The subscribers in id order with their account's active keys (None: no active keys). One
    `SealedKeys` per account, shared by its subscriptions."""
    query = (
        select(*_SUBSCRIBER_COLUMNS, *SEALED_COLUMNS)
        .outerjoin(
            BrokerCredential,
            (BrokerCredential.id == Subscription.broker_credential_id) & BrokerCredential.is_active.is_(True),
        )
        .where(Subscription.strategy_id == strategy_id)
        .order_by(Subscription.id)
    )
    if not every:
        query = query.where(Subscription.is_active.is_(True), Subscription.is_paused.is_(False))
    if only is not None:
        query = query.where(only)
    width = len(_SUBSCRIBER_COLUMNS)
    accounts: dict[int, SealedKeys] = {}
    out: list[tuple[_Subscriber, SealedKeys | None]] = []
    for row in session.execute(query):
        keys = None
        if row[width] is not None:
            keys = accounts.get(row[width])
            if keys is None:
                keys = accounts[row[width]] = SealedKeys(*row[width:])
        out.append((_Subscriber(*row[:width]), keys))
    return out


class _OpenTrade(NamedTuple):
    id: int
    subscription_id: int
    side: str
    quantity: Decimal


def _open_trades(session: Session, strategy_id: int) -> dict[int, list[_OpenTrade]]:
    """The strategy's open trades per subscription, in id order (plain rows)."""
    out: dict[int, list[_OpenTrade]] = {}
    query = (
        select(Trade.id, Trade.subscription_id, Trade.side, Trade.quantity)
        .where(Trade.strategy_id == strategy_id, Trade.status == TradeStatus.OPEN)
        .order_by(Trade.id)
    )
    for row in session.execute(query):
        out.setdefault(row[1], []).append(_OpenTrade(*row))
    return out


def _pnl_today(session: Session, subscription_ids: list[int], day_start: datetime) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for sub_id, pnl in session.execute(
        select(Trade.subscription_id, Trade.pnl).where(
            among(session, Trade.subscription_id, subscription_ids),
            Trade.status == TradeStatus.CLOSED,
            Trade.exit_time >= day_start,
        )
    ):
        out[sub_id] = out.get(sub_id, Decimal(0)) + (pnl or 0)
    return out


def _open_counts(session: Session, subscription_ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(Trade.subscription_id, func.count())
        .where(among(session, Trade.subscription_id, subscription_ids), Trade.status.in_(OPEN_TRADE))
        .group_by(Trade.subscription_id)
    ).all()
    return dict(rows)


def take_profits_of(session: Session, strategy_id: int, trade_ids: list[int] | None = None) -> dict[int, str]:
    """Open trade id -> client id of its live take profit, for every open trade of the strategy
    (or for `trade_ids`, open trades already read: filtered by id, no join, so the plan does not
    depend on table statistics that lag a candle's bulk insert — a stale estimate of one open trade
    made Postgres nest a loop over 10,000 of them, 6.5 s)."""
    query = select(Order.trade_id, Order.client_order_id).where(
        Order.leg == Leg.TAKE_PROFIT, Order.status.in_(PENDING)
    )
    if trade_ids is None:
        query = query.join(Trade, Trade.id == Order.trade_id).where(
            Trade.strategy_id == strategy_id, Trade.status == TradeStatus.OPEN
        )
    elif not trade_ids:
        return {}
    else:
        query = query.where(among(session, Order.trade_id, trade_ids))
    out: dict[int, str] = {}
    for trade_id, cid in session.execute(query.order_by(Order.id)):
        if trade_id is not None:  # joined to or filtered by its trade: always set
            out.setdefault(trade_id, cid)
    return out


@dataclass
class _NewOrder:
    """An order planned this candle, inserted with the others once every subscriber is planned."""

    row: dict[str, Any]
    credential: SealedKeys
    job_kwargs: dict[str, Any]
    trade: dict[str, Any] | None = None  # the trade it opens (its id is known after the insert)


def _levels(signal: Signal, market: Market) -> dict[str, Decimal | None]:
    """The signal's take profit and stop loss on the market's tick. A level the market cannot quote
    (finite, on the right side, yet 1e30 or 1e-9) is refused by name before any intent is written:
    it would fail at the exchange for every subscriber, or round to no price at all."""
    out: dict[str, Decimal | None] = {}
    low, high = market.min_price or market.tick, market.max_price
    for name, value in (("take_profit", signal.take_profit), ("stop_loss", signal.stop_loss)):
        try:
            price = None if value is None else market.round_price(value)
        except InvalidOperation:  # more digits than any price has
            price = Decimal("Infinity")
        if price is not None and (price < low or (high is not None and price > high)):
            quoted = f"{low} to {high}" if high is not None else f"from {low}"
            raise ValidationError(
                f"signal.{name}", f"{value:.8g} is outside the prices {market.symbol} quotes ({quoted})"
            )
        out[name] = price
    return out


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
    open_trades = _open_trades(session, p.strategy_id)
    counts = _open_counts(session, sub_ids)
    take_profits = (
        take_profits_of(session, p.strategy_id, [t.id for ts in open_trades.values() for t in ts])
        if market.kind == "spot"
        else {}
    )
    pnl_today = _pnl_today(session, sub_ids, p.now.replace(hour=0, minute=0, second=0, microsecond=0))
    entry_side = {"LONG": "buy", "SHORT": "sell"}.get(signal.action)
    jobs: list[Job] = []  # intents a dead worker left unresolved
    new: list[_NewOrder] = []  # per subscriber: its exits, then its entry
    new_take_profits: list[tuple[_NewOrder, _NewOrder]] = []  # a spot take profit, the entry it protects
    remaining = dict(p.free_balances or {})  # what this candle's entries have not yet taken, per account
    levels = _levels(signal, market)

    def new_order(
        cid: str, fields: dict[str, Any], cred: SealedKeys, job_kwargs: dict[str, Any]
    ) -> _NewOrder:
        """Plan the new order `cid` (inserted with the others, sent after commit)."""
        planned = _NewOrder(_order_row(p, market, cid, "market_order", fields), cred, job_kwargs)
        new.append(planned)
        return planned

    def intent(cid: str, fields: dict[str, Any], cred: SealedKeys, job_kwargs: dict[str, Any]) -> None:
        """Plan the order `cid` if new; resolve it if left unresolved."""
        order = existing.get(cid)
        if order is None:
            new_order(cid, fields, cred, job_kwargs)
        elif order.status in UNRESOLVED:
            jobs.append(Job(Intent.of(order), kind, cred, **job_kwargs))

    for sub, cred in subs:
        if cred is None:
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
            cid = client_order_id(p.execution_id, sub.id, Leg.EXIT, trade.id)
            if cid not in existing and not p.allow_new:
                continue
            intent(
                cid,
                {"subscription_id": sub.id, "trade_id": trade.id, "leg": Leg.EXIT, "quantity": trade.quantity,
                 "side": "sell" if trade.side == "LONG" else "buy"},
                cred,
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
        cid = client_order_id(p.execution_id, sub.id, Leg.ENTRY)
        if cid in existing:  # resumed: resolve the intent, never size again
            order = existing[cid]
            if order.status in UNRESOLVED:
                kw: dict[str, Any] = {}
                if kind == "futures":  # its trade was inserted with it: it holds the levels to attach
                    trade = session.get_one(Trade, order.trade_id)
                    kw = {**entry_kwargs, "take_profit": trade.take_profit, "stop_loss": trade.stop_loss}
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
        entry = new_order(  # not in `existing` (resumed above): always new
            cid,
            {"subscription_id": sub.id, "leg": Leg.ENTRY, "side": entry_side, "quantity": quantity,
             "price": signal.price},
            cred,
            {**entry_kwargs, **(levels if kind == "futures" else {})},
        )  # fmt: skip
        entry.trade = {
            "subscription_id": sub.id, "strategy_id": p.strategy_id, "user_id": sub.user_id,
            "execution_id": p.execution_id, "symbol": market.symbol, "market_type": kind, "side": signal.action,
            "quantity": quantity, "leverage": leverage, "status": TradeStatus.PENDING, **levels,
        }  # fmt: skip
        if kind == "spot" and levels["take_profit"] is not None:
            # The take profit's intent is written now too, and sent as soon as its entry fills.
            tp_cid = client_order_id(p.execution_id, sub.id, Leg.TAKE_PROFIT)
            tp_row = _order_row(p, market, tp_cid, "limit_order", {"subscription_id": sub.id, "leg": Leg.TAKE_PROFIT,
                                "side": "sell", "quantity": quantity, "price": levels["take_profit"]})  # fmt: skip
            new_take_profits.append((_NewOrder(tp_row, cred, {"market": market}), entry))

    result.trades_created += sum(1 for n in new if n.trade is not None)
    # Per subscriber, send_all keeps this order: exits, then entries, then their take profits.
    return jobs + _insert(session, new, new_take_profits, kind)


def _order_row(
    p: PlanInput, market: Market, cid: str, order_type: str, fields: dict[str, Any]
) -> dict[str, Any]:
    # Written as SENDING: it is committed only to be sent at once, so after a crash it is asked for
    # by client id before anything is sent again (one UPDATE fewer per order than INTENT → SENDING).
    return {"execution_id": p.execution_id, "trade_id": None, "client_order_id": cid, "market": market.symbol,
            "order_type": order_type, "price": None, "status": OrderStatus.SENDING, "attempts": 1, **fields}  # fmt: skip


def _insert(
    session: Session, new: list[_NewOrder], take_profits: list[tuple[_NewOrder, _NewOrder]], kind: str
) -> list[Job]:
    """Two INSERTs (trades, then orders), each of every row at once, ids returned in row order.
    Returns the jobs of `new`, then of the take profits (each sent after its entry's job)."""
    opening = [(n, n.trade) for n in new if n.trade is not None]
    if opening:
        trade_ids = insert_returning_ids(session, Trade, [trade for _, trade in opening])
        for (n, _), trade_id in zip(opening, trade_ids, strict=True):
            n.row["trade_id"] = trade_id
    for tp, entry in take_profits:
        tp.row["trade_id"] = entry.row["trade_id"]
    planned = new + [tp for tp, _ in take_profits]
    if not planned:
        return []
    order_ids = insert_returning_ids(session, Order, [n.row for n in planned])
    jobs = [
        Job(Intent.inserted(order_id, n.row), kind, n.credential, lookup_first=False, **n.job_kwargs)
        for n, order_id in zip(planned, order_ids, strict=True)
    ]
    job_of = {id(n): job for n, job in zip(planned, jobs, strict=True)}
    for tp, entry in take_profits:
        job_of[id(tp)].after = job_of[id(entry)]
    return jobs


def mark_sending(session: Session, jobs: list[Job]) -> None:
    """One UPDATE before any request: after a crash, SENDING means "ask the exchange first"."""
    fresh = [j.order for j in jobs if j.order.status == OrderStatus.INTENT]
    for start in range(0, len(fresh), 500):
        session.execute(
            update(Order)
            .where(Order.id.in_([o.id for o in fresh[start : start + 500]]))
            .values(status=OrderStatus.SENDING, attempts=Order.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    for order in fresh:
        order.status = OrderStatus.SENDING


def spot_take_profit_jobs(session: Session, execution_id: int, market: Market, only: Any = None) -> list[Job]:
    """Every spot LONG of this execution that is open gets its take profit as a resting limit sell
    (intent first). Read from the store, so a resumed execution finishes what a dead worker began.

    The stop loss of a spot trade is not on the book (one sell cannot lock the same coins twice):
    the reconciler watches it."""
    query = (
        select(Trade, BrokerCredential)
        .join(Subscription, Subscription.id == Trade.subscription_id)
        .join(BrokerCredential, BrokerCredential.id == Subscription.broker_credential_id)
        .where(Trade.execution_id == execution_id, Trade.status == TradeStatus.OPEN, Trade.take_profit.is_not(None),
               Trade.market_type == "spot", Trade.side == "LONG")
        .order_by(Trade.id)
    )  # fmt: skip
    rows = session.execute(query if only is None else query.where(only)).all()
    existing = {
        o.trade_id: o
        for o in session.scalars(
            select(Order).where(Order.execution_id == execution_id, Order.leg == Leg.TAKE_PROFIT)
        )
    }
    # A take profit whose entry never filled cannot exist on the exchange (no coins to sell): settle it.
    settle = update(Order).where(
        Order.execution_id == execution_id, Order.leg == Leg.TAKE_PROFIT, Order.status.in_(UNRESOLVED),
        Order.trade_id.in_(select(Trade.id).where(Trade.execution_id == execution_id, Trade.status == TradeStatus.FAILED)),
    )  # fmt: skip
    if only is not None:
        settle = settle.where(Order.subscription_id.in_(select(Subscription.id).where(only)))
    session.execute(
        settle
        .values(status=OrderStatus.CANCELLED, error="its entry did not fill")
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    filling = set(session.scalars(select(Order.trade_id).where(
        Order.execution_id == execution_id, Order.leg == Leg.ENTRY, Order.status.in_(WATCHED))))  # fmt: skip
    planned: list[tuple[Order, BrokerCredential, Decimal]] = []
    for trade, credential in rows:
        if trade.id in filling:  # the reconciler places it for all that filled once the entry is final
            continue
        tp = existing.get(trade.id)
        held = market.round_quantity(trade.quantity)  # what the entry filled, not what was planned
        if tp is None:
            tp = Order(
                execution_id=execution_id, subscription_id=trade.subscription_id, trade_id=trade.id,
                leg=Leg.TAKE_PROFIT, client_order_id=client_order_id(execution_id, trade.subscription_id, Leg.TAKE_PROFIT),
                market=market.symbol, side="sell", order_type="limit_order", quantity=held, price=trade.take_profit,
                status=OrderStatus.INTENT,
            )  # fmt: skip
            session.add(tp)
        if tp.status == OrderStatus.LOST:
            # The reconciler found that it never reached the exchange (its worker died first): the
            # open position must not stay without it. Asked for by client id once more, then sent.
            tp.status = OrderStatus.UNKNOWN
        if tp.status in UNRESOLVED:
            planned.append((tp, credential, held))
    session.flush()
    return [Job(Intent.of(tp), "spot", credential, send_quantity=held) for tp, credential, held in planned]
