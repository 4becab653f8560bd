"""Fan one signal out to every subscriber, in three phases (one module each):

1. `intents.plan`: size each subscriber's position, check its limits and write its trade and order
   intents in one transaction, before anything is sent.
2. `dispatch.send_all`: send with bounded concurrency; a retry never creates a second order.
3. `record.record`: write each answer by the rule of `lifecycle.apply_report`, close what filled.

`send_and_record` is phases 2 and 3 for a batch of planned jobs: the fan-out and the reconciler's
stop-outs and take profits both go through it. The names below stay importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from xcoin_trading.exchange.client import AiohttpPool
from xcoin_trading.live.dispatch import Intent, Job, KeyRing, free_balances, send_all
from xcoin_trading.live.intents import PlanInput, mark_sending, plan, spot_take_profit_jobs, take_profits_of
from xcoin_trading.live.record import FanoutResult, record
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import OPEN_TRADE, UNRESOLVED, order_status_of

if TYPE_CHECKING:
    from xcoin_trading.live.context import LiveContext

__all__ = [
    "OPEN_TRADE",
    "UNRESOLVED",
    "FanoutResult",
    "Intent",
    "Job",
    "KeyRing",
    "PlanInput",
    "free_balances",
    "mark_sending",
    "order_status_of",
    "plan",
    "record",
    "send_all",
    "send_and_record",
    "spot_take_profit_jobs",
    "take_profits_of",
]


async def send_and_record(
    ctx: LiveContext, jobs: list[Job], now: datetime, result: FanoutResult, *, pool: AiohttpPool | None = None,
    timings: dict[str, int] | None = None, prefix: str = "",
    then: Callable[[Session, dict[int, Decimal]], None] | None = None, keyring: KeyRing | None = None,
) -> dict[int, Decimal]:  # fmt: skip
    """Send jobs already marked SENDING (committed), then record every answer in one transaction.
    Returns {trade id: realised P&L} of the trades the answers closed. `timings` gets the wall ms of
    each phase as `<prefix>send_ms` / `<prefix>record_ms`; `then(session, closed)` runs in the
    recording transaction."""
    clock = time.perf_counter()
    await send_all(ctx.api_url, ctx.public_url, ctx.vault, jobs, ctx.concurrency, pool, keyring)
    sent = time.perf_counter()
    with session_scope(ctx.settings) as session:
        closed = record(session, jobs, now, result)
        if then is not None:
            then(session, closed)
    if timings is not None:
        for name, ms in (("send_ms", sent - clock), ("record_ms", time.perf_counter() - sent)):
            timings[prefix + name] = timings.get(prefix + name, 0) + int(ms * 1000)
    return closed
