"""The states of orders, trades and executions, their named sets, and the one rule that applies an
exchange answer to an order and its trade (the fan-out and the reconciler both call `apply_report`).

The values are stored (orders.status, trades.status, trades.exit_type, ...) and served by the API:
they never change. The dbt_like_sql models compare against the same values (checked by a test).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol


class OrderStatus(StrEnum):
    INTENT = "INTENT"  # written, not sent (sent only after it is marked SENDING)
    SENDING = "SENDING"  # may have been sent: asked for by client id before any resend
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"  # a failure left it unknown whether the exchange has it
    LOST = "LOST"  # the exchange never had it (absent after several complete look-ups)
    EXTERNAL = "EXTERNAL"  # on a user's account, never placed by us (audit)


def _named(*members: StrEnum) -> tuple:
    """A named set, in declaration order (deterministic SQL `IN (...)`, error messages)."""
    return tuple(m for m in type(members[0]) if m in members)


S = OrderStatus
UNRESOLVED = _named(S.INTENT, S.SENDING, S.UNKNOWN)  # whether it exists is not known yet
WORKING = _named(S.OPEN, S.PARTIALLY_FILLED)  # resting on the exchange
WATCHED = _named(S.SENDING, S.UNKNOWN, *WORKING)  # the reconciler asks the exchange each pass
PENDING = _named(*UNRESOLVED, *WORKING)  # not done yet (positions' and the SQL models' "pending")
FINAL = _named(S.FILLED, S.CANCELLED, S.REJECTED)  # the exchange said it is done
NOT_EXECUTED = _named(S.CANCELLED, S.REJECTED, S.LOST)  # ended, maybe with no fill at all
PROTECTING = _named(*WORKING, S.FILLED)  # a take profit that covers its trade (or closed it)


class TradeStatus(StrEnum):
    PENDING = "PENDING"  # its entry has no fill yet
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    FAILED = "FAILED"  # its entry ended without a fill


OPEN_TRADE = _named(TradeStatus.PENDING, TradeStatus.OPEN)
ENDED_TRADE = _named(TradeStatus.CLOSED, TradeStatus.FAILED)


class Leg(StrEnum):
    ENTRY = "ENTRY"
    TAKE_PROFIT = "TAKE_PROFIT"
    STOP_LOSS = "STOP_LOSS"
    EXIT = "EXIT"


class ExitReason(StrEnum):
    """Why a trade closed: `trades.exit_type` live, `exit_reason` in a backtest's trades, where the
    stored labels are the short ones (`backtest_label`); a backtest's END (still open at the last
    candle) is never a live close."""

    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"
    SIGNAL = "SIGNAL"
    END = "END"
    LIQUIDATION = "LIQUIDATION"
    MANUAL = "MANUAL"

    @property
    def backtest_label(self) -> str:
        return _BACKTEST_LABELS.get(self, self.value)

    @classmethod
    def of_backtest(cls, label: str) -> ExitReason:
        return {v: k for k, v in _BACKTEST_LABELS.items()}.get(label) or cls(label)


_BACKTEST_LABELS = {ExitReason.STOP_LOSS: "SL", ExitReason.TAKE_PROFIT: "TP"}
# The backtest kernel's reason codes are the positions in this tuple (numba sees plain ints).
BACKTEST_REASONS = (ExitReason.STOP_LOSS, ExitReason.TAKE_PROFIT, ExitReason.SIGNAL, ExitReason.END)
REASON_SL, REASON_TP, REASON_SIGNAL, REASON_END = range(len(BACKTEST_REASONS))


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    NO_SIGNAL = "NO_SIGNAL"


FINISHED_EXECUTION = _named(*(s for s in ExecutionStatus if s != ExecutionStatus.RUNNING))


class Report(Protocol):
    """What the exchange says of one order (`exchange.models.Order`, a frozen dataclass: read-only)."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def avg_price(self) -> Decimal: ...

    @property
    def total_quantity(self) -> Decimal: ...

    @property
    def filled_quantity(self) -> Decimal: ...

    @property
    def fee_amount(self) -> Decimal: ...

    @property
    def updated_at(self) -> datetime | None: ...

    @property
    def raw(self) -> dict[str, Any]: ...


_EXCHANGE_FINAL = {
    "filled": S.FILLED,
    "rejected": S.REJECTED,
    "cancelled": S.CANCELLED,
    "partially_cancelled": S.CANCELLED,
}


def order_status_of(report: Report) -> OrderStatus:
    if report.status in _EXCHANGE_FINAL:
        return _EXCHANGE_FINAL[report.status]
    return S.PARTIALLY_FILLED if report.filled_quantity > 0 else S.OPEN


def order_values(report: Report, quantity: Decimal) -> dict[str, Any]:
    """The order's columns as `report` states them (`quantity`: ours where the report has none)."""
    return {
        "status": order_status_of(report),
        "exchange_order_id": report.id,
        "quantity": report.total_quantity or quantity,
        "filled_quantity": report.filled_quantity,
        "avg_price": report.avg_price or None,
        "fee": report.fee_amount,
        "raw_last_response": report.raw,
    }


@dataclass(frozen=True)
class Exit:
    """A fill that closes a trade: the caller closes it (`live.trades.close_trade(s)`: P&L, counters)."""

    price: Decimal
    fee: Decimal
    type: str
    time: datetime


_CLOSING_LEGS = {Leg.TAKE_PROFIT: ExitReason.TAKE_PROFIT, Leg.STOP_LOSS: ExitReason.STOP_LOSS,
                 Leg.EXIT: ExitReason.SIGNAL}  # fmt: skip


def apply_report(order: Any, report: Report, trade: Any | None, now: datetime) -> Exit | None:
    """Write the exchange's answer on `order` (store row or fan-out intent), then move its trade.

    Returns the exit when the answer closes the trade (the caller closes it)."""
    for name, value in order_values(report, order.quantity).items():
        setattr(order, name, value)
    return advance_trade(order, trade, report.updated_at or now)


def advance_trade(order: Any, trade: Any | None, at: datetime) -> Exit | None:
    """The trade as its order now stands (one rule for the fan-out and the reconciler).

    An entry opens its trade on its first fill, not once it is final: the position exists from that
    fill, so the stop is watched and a take profit placed for what filled. While the entry keeps
    filling, the trade follows it exactly (quantity, average price and fee are the exchange's
    cumulative figures); an entry that ended short of its quantity is flagged PARTIAL_ENTRY, one
    that ended with no fill fails its trade."""
    if trade is None:
        return None
    status, leg = order.status, order.leg
    if leg == Leg.ENTRY:
        filled = order.filled_quantity or Decimal(0)
        if filled > 0 and trade.status in OPEN_TRADE:
            if trade.status == TradeStatus.PENDING:
                trade.status, trade.entry_time = TradeStatus.OPEN, at
            trade.quantity, trade.entry_price = filled, order.avg_price
            trade.entry_fee = trade.fees = order.fee
            if (status in FINAL or status == S.LOST) and filled < order.quantity:
                _flag(trade, "PARTIAL_ENTRY")
        elif filled <= 0 and status in NOT_EXECUTED and trade.status == TradeStatus.PENDING:
            trade.status = TradeStatus.FAILED
        return None
    if trade.status != TradeStatus.OPEN:
        return None
    if status == S.FILLED and leg in _CLOSING_LEGS:
        return Exit(order.avg_price, order.fee, _CLOSING_LEGS[leg], at)
    if status == S.CANCELLED and leg == Leg.TAKE_PROFIT:
        _flag(trade, "TAKE_PROFIT_CANCELLED")
    return None


def _flag(trade: Any, flag: str) -> None:
    if flag not in trade.flags:
        trade.flags = [*trade.flags, flag]  # a new list: the JSON column sees the change
