"""An operator's EXIT: close every open trade of a strategy at market now, for every subscription,
through the same intent-first fan-out as a candle (`xcoin live flatten`).

At most one flatten of a strategy runs at a time: its execution row holds the key `running_flatten`
until it finishes, then gives it up (`<start>_<id>_flatten`), so a crashed flatten is taken over by
the next one, never run beside it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from xcoin_trading.live.context import LiveContext
from xcoin_trading.live.coordinator import ExecutionReport, claim_execution, finish_execution
from xcoin_trading.live.fanout import fan_out
from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.live.runner import Signal
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import OPEN_TRADE, Leg, OrderStatus, TradeStatus
from xcoin_trading.store.models import Order, Strategy, StrategyExecution, Subscription, Trade
from xcoin_trading.timeframes import utcnow

RUNNING_FLATTEN = "running_flatten"  # the one key a strategy's running flatten holds (unique per strategy)


def _retire_flatten_key(row: StrategyExecution) -> None:
    """A finished flatten gives the running key up: `<start>_<id>_flatten` (unique: it has the id)."""
    stamp = (row.started_at or row.scheduled_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    row.interval_key = f"{stamp}_{row.id}_flatten"


def _claim_flatten(ctx: LiveContext, strategy: StrategySettings, now: datetime) -> tuple[int, bool, str]:
    """At most one flatten of a strategy runs: its row holds the key `running_flatten`. A re-run after
    a crash takes the dead one's row over (RESUMED: its intents are resolved by client id before
    anything is sent again); one whose worker is alive is IN_PROGRESS."""
    for _ in range(2):
        execution_id, resumed, state = claim_execution(ctx, strategy, RUNNING_FLATTEN, now)
        if state != "ALREADY_DONE":
            return execution_id, resumed, state
        with session_scope(ctx.settings) as session:  # closed by someone else (e.g. the run-failure sensor)
            _retire_flatten_key(session.get_one(StrategyExecution, execution_id))
    return execution_id, resumed, state


def _open_trades(ctx: LiveContext, strategy_id: int) -> dict[int, list[int]]:
    """Subscription id -> ids of its OPEN/PENDING trades of the strategy."""
    with session_scope(ctx.settings) as session:
        rows = session.execute(
            select(Trade.subscription_id, Trade.id)
            .where(Trade.strategy_id == strategy_id, Trade.status.in_(OPEN_TRADE))
            .order_by(Trade.id)
        ).all()
    out: dict[int, list[int]] = {}
    for sub_id, trade_id in rows:
        out.setdefault(sub_id, []).append(trade_id)
    return out


def flatten(ctx: LiveContext, strategy: StrategySettings, now: datetime | None = None) -> ExecutionReport:
    """Close every open trade of a strategy at market now (an operator's EXIT), for every one of its
    subscriptions, through the same intent-first fan-out.

    1. Claim (or take over a dead worker's) `running_flatten` execution.
    2. A reconcile pass over its subscribers with the exchange's answers: PENDING trades open or fail,
       unknown orders are resolved, positions the store lacked are linked back or adopted.
    3. EXIT fan-out (an exit still unresolved from before is not doubled: its trade waits for it).
    4. Another pass records closes the exchange made itself; the outcome per subscriber is CLOSED
       (with P&L), ALREADY_FLAT or NOT_CLOSED with the reason (then `error` is set)."""
    from xcoin_trading.live.reconcile import reconcile_once

    now = now or utcnow()
    execution_id, _, state = _claim_flatten(ctx, strategy, now)
    report = ExecutionReport(strategy.id, strategy.code, RUNNING_FLATTEN, "COMPLETED", signal="EXIT")
    report.execution_id = execution_id
    if state == "IN_PROGRESS":
        report.status = state
        return report
    started = time.perf_counter()
    signal = Signal("EXIT", Decimal(0), None, None, 0)
    with session_scope(ctx.settings) as session:
        row = session.get_one(StrategyExecution, execution_id)
        row.signal, row.signal_price = signal.action, signal.price
        sub_ids = list(
            session.scalars(select(Subscription.id).where(Subscription.strategy_id == strategy.id))
        )
    before = _open_trades(ctx, strategy.id)
    if sub_ids:
        reconcile_once(ctx, now, audit=True, subscription_ids=sub_ids, protect=False)
    with session_scope(ctx.settings) as session:  # an exit of an earlier run whose outcome is unknown
        waiting = dict(session.execute(
            select(Order.trade_id, Order.client_order_id)
            .join(Trade, Trade.id == Order.trade_id)
            .where(Trade.strategy_id == strategy.id, Trade.status == TradeStatus.OPEN, Order.execution_id != execution_id,
                   Order.leg.in_((Leg.EXIT, Leg.STOP_LOSS)), Order.status.in_((OrderStatus.SENDING, OrderStatus.UNKNOWN)))
        ).all())  # fmt: skip
    for sub_id, ids in _open_trades(ctx, strategy.id).items():  # adopted or linked back by that pass
        before[sub_id] = sorted({*before.get(sub_id, []), *ids})
    result = fan_out(ctx, strategy, execution_id, signal, now, allow_new=True,
                      skip_trades=frozenset(waiting), every_subscription=True)  # fmt: skip
    if sub_ids:
        reconcile_once(ctx, now, subscription_ids=sub_ids, protect=False)
    after = _open_trades(ctx, strategy.id)
    outcomes: dict[int, dict[str, Any]] = {}
    with session_scope(ctx.settings) as session:
        touched = {t for ids in before.values() for t in ids}
        closed = {
            t.id: t for t in session.scalars(select(Trade).where(Trade.id.in_(touched), Trade.status == TradeStatus.CLOSED))
        }  # fmt: skip
        for sub_id in sorted(set(sub_ids)):
            still = after.get(sub_id, [])
            mine = [t for t in closed.values() if t.subscription_id == sub_id]
            if still:
                open_trades = [session.get_one(Trade, t) for t in still]
                unexplained = [t.id for t in open_trades if "FLAT_WITHOUT_CLOSE" in t.flags]
                if unexplained:
                    why = (f"the exchange position is flat but no order on the exchange explains its close (trade(s) "
                           f"{', '.join(map(str, unexplained))} flagged FLAT_WITHOUT_CLOSE): look at the account's "
                           "fills and record the close by hand")  # fmt: skip
                else:
                    why = result.outcomes.get(sub_id, {}).get("reason")
                why = why or ("an earlier exit's outcome is still unknown" if set(still) & set(waiting)
                              else "its entry's outcome is still unknown"
                              if any(t.status == TradeStatus.PENDING for t in open_trades)
                              else "the exchange did not confirm the exit")  # fmt: skip
                outcomes[sub_id] = {"status": "NOT_CLOSED", "reason": why, "open_trades": still}
            elif mine:
                pnl = sum((t.pnl or Decimal(0) for t in mine), Decimal(0))
                outcomes[sub_id] = {"status": "CLOSED", "trades": sorted(t.id for t in mine), "pnl": str(pnl)}
            else:
                outcomes[sub_id] = {"status": "ALREADY_FLAT"}
    failures = [k for k, v in outcomes.items() if v["status"] == "NOT_CLOSED"]
    report.outcomes, report.subscribers = outcomes, len(outcomes)
    report.error = f"{len(failures)} subscriber(s) could not be closed" if failures else None
    with session_scope(ctx.settings) as session:
        row = session.get_one(StrategyExecution, execution_id)
        _retire_flatten_key(row)
        report.interval_key = row.interval_key
    finish_execution(ctx, execution_id, started, status="COMPLETED", subscribers_count=len(outcomes),
                     error=report.error,
                     details={"outcomes": {str(k): v for k, v in outcomes.items()}, "timings": result.timings})  # fmt: skip
    return report


def flatten_all(ctx: LiveContext, now: datetime | None = None) -> list[ExecutionReport]:
    """`flatten` for every strategy that has a subscription (one after the other, same path)."""
    with session_scope(ctx.settings) as session:
        rows = session.scalars(
            select(Strategy).where(Strategy.id.in_(select(Subscription.strategy_id))).order_by(Strategy.id)
        ).all()
        strategies = [StrategySettings.from_row(r) for r in rows]
    return [flatten(ctx, s, now) for s in strategies]
