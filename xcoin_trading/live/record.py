"""Fan-out phase 3, record: write each answer to its order and move its trade by the one rule of
`lifecycle.apply_report` (the reconciler applies the same rule), close trades whose exit filled.
One transaction, bulk UPDATEs by id; one subscriber's failure is recorded on that subscriber only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xcoin_trading.live.dispatch import Job
from xcoin_trading.live.trades import close_trades
from xcoin_trading.store.db import among, update_by_id
from xcoin_trading.store.lifecycle import (
    Exit,
    ExitReason,
    Leg,
    OrderStatus,
    advance_trade,
    apply_report,
    order_values,
)
from xcoin_trading.store.models import Order, Trade


@dataclass
class FanoutResult:
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)  # subscription id -> outcome
    trades_created: int = 0
    timings: dict[str, int] = field(default_factory=dict)  # wall ms per phase
    resumed: bool = False  # the execution already had orders (a dead worker's): settle them all
    shrunk: dict[int, str] = field(default_factory=dict)  # subscription id -> why its entry is smaller
    balances_read_ahead: int = 0  # accounts whose free balance was read before the close

    def note(self, subscription_id: int, status: str, reason: str | None = None, **extra: Any) -> None:
        if subscription_id in self.shrunk:
            extra = {"balance": self.shrunk[subscription_id], **extra}
        self.outcomes[subscription_id] = {"status": status, **({"reason": reason} if reason else {}), **extra}


@dataclass(slots=True)
class TradeState:
    """The columns of a trade an answer may move (read in bulk, written back by id when moved)."""

    id: int
    status: str
    quantity: Decimal
    entry_price: Decimal | None
    entry_fee: Decimal
    fees: Decimal
    entry_time: datetime | None
    flags: list[str]

    def values(self) -> tuple[Any, ...]:
        return _TRADE_VALUES(self)

    def row(self, now: datetime) -> dict[str, Any]:
        return {**dict(zip(self.__slots__, _TRADE_VALUES(self), strict=True)), "updated_at": now}


_TRADE_VALUES = attrgetter(*TradeState.__slots__)  # one C call per trade, twice per answer


def _trade_states(session: Session, trade_ids: set[int]) -> dict[int, TradeState]:
    ids, out = sorted(trade_ids), {}
    columns = [getattr(Trade, name) for name in TradeState.__slots__]
    for start in range(0, len(ids), 5000):
        for row in session.execute(
            select(*columns).where(among(session, Trade.id, ids[start : start + 5000]))
        ):
            out[row[0]] = TradeState(*row)
    return out


def record(session: Session, jobs: list[Job], now: datetime, result: FanoutResult) -> dict[int, Decimal]:
    """Write each answer to its order and trade; close trades whose exit filled. All in bulk.
    Returns {trade id: realised P&L} of the trades closed now."""
    cancelled: list[str] = []
    exits: dict[int, tuple[int, Exit]] = {}  # trade id -> (subscription id, its exit fill)
    trades = _trade_states(session, {j.order.trade_id for j in jobs if j.order.trade_id})
    before = {trade_id: t.values() for trade_id, t in trades.items()}
    orders = [_record_one(job, _trade_of(trades, job), cancelled, exits, now, result) for job in jobs]
    update_by_id(session, Order, orders)
    for job in jobs:  # what the exchange said of a take profit an exit cancelled (rare: one per exit)
        tp = job.take_profit_seen
        if tp is None:
            continue
        session.execute(
            update(Order)
            .where(Order.client_order_id == job.cancel_first)
            .values(
                **{k: v for k, v in order_values(tp, Decimal(0)).items() if k != "quantity"}, updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
        if tp.status == "filled" and job.order.trade_id:
            exits[job.order.trade_id] = (
                job.order.subscription_id,
                Exit(tp.avg_price, tp.fee_amount, ExitReason.TAKE_PROFIT, tp.updated_at or now),
            )
    moved = [t.row(now) for t in trades.values() if t.values() != before[t.id]]
    update_by_id(session, Trade, moved)
    closed = close_trades(session, {trade_id: fill for trade_id, (_, fill) in exits.items()}, now)
    for trade_id, pnl in closed.items():
        sub_id = exits[trade_id][0]
        if result.outcomes.get(sub_id, {}).get("status") != "PLACED":  # a reversal reports its new entry
            result.note(sub_id, "CLOSED", trade_id=trade_id, pnl=str(pnl))
    for start in range(0, len(cancelled), 5000):
        session.execute(
            update(Order)
            .where(among(session, Order.client_order_id, cancelled[start : start + 5000]))
            .values(status=OrderStatus.CANCELLED, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return closed


def _trade_of(trades: dict[int, TradeState], job: Job) -> TradeState | None:
    return trades.get(job.order.trade_id) if job.order.trade_id is not None else None


def _record_one(job: Job, trade: TradeState | None, cancelled: list[str], exits: dict[int, tuple[int, Exit]],
                now: datetime, result: FanoutResult) -> dict[str, Any]:  # fmt: skip
    """The order's new column values; its trade moves in place, a filled exit goes to `exits`."""
    order = job.order
    sub_id = order.subscription_id
    protective = order.leg == Leg.TAKE_PROFIT  # its outcome belongs to the entry's, not in its place
    if job.deferred is not None:
        # Never sent: a stop stays armed (INTENT, sent again next pass); an exit is reported not done.
        order.status = job.on_defer
        if not protective:
            result.note(sub_id, "NOT_CLOSED", job.deferred)
        return {"id": order.id, "status": order.status, "error": job.deferred, "updated_at": now}
    if job.skipped is not None:
        order.status = OrderStatus.CANCELLED
        if not protective:
            result.note(sub_id, "NO_POSITION", job.skipped)
        return {"id": order.id, "status": order.status, "error": job.skipped, "updated_at": now}
    if job.held_back is not None and job.result is None and job.error is None:  # never sent: its trade fails
        order.status = OrderStatus.CANCELLED
        advance_trade(order, trade, now)
        exit_outcome = result.outcomes.get(sub_id, {})
        result.note(sub_id, exit_outcome.get("status", "FAILED"),
                    "; ".join(filter(None, (exit_outcome.get("reason"), f"its reversing entry {job.held_back}"))))  # fmt: skip
        return {"id": order.id, "status": order.status, "error": job.held_back, "updated_at": now}
    if job.error is not None:
        # "Could not ask" is unknown, not failed: the reconciler resolves UNKNOWN by client id.
        order.status = OrderStatus.UNKNOWN if job.ambiguous else OrderStatus.REJECTED
        advance_trade(order, trade, now)  # a refused entry fails its trade
        if protective:
            result.outcomes.setdefault(sub_id, {"status": "PLACED"})["take_profit_error"] = job.error
        else:
            result.note(sub_id, "UNKNOWN" if job.ambiguous else "FAILED", job.error)
        return {"id": order.id, "status": order.status, "error": job.error, "updated_at": now}
    if job.send_quantity is not None:
        order.quantity = job.send_quantity
    if job.cancelled_take_profit and job.cancel_first is not None:  # it was cancelled by that id
        cancelled.append(job.cancel_first)
    if job.result is None:  # send_all leaves each job with an answer, an error, a skip or a deferral
        raise RuntimeError(f"order {order.client_order_id}: sent, but neither answered nor failed")
    closing = apply_report(order, job.result, trade, now)
    if closing is not None and order.trade_id is not None:  # an exit only ever comes with its trade
        exits[order.trade_id] = (sub_id, closing)
    if order.leg == Leg.ENTRY and order.trade_id:
        result.note(sub_id, "PLACED", trade_id=order.trade_id, order_status=order.status)
    return {**order.answered(), "updated_at": now}
