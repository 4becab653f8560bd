"""Fan one signal out to every subscriber, in three phases (one module each):

1. `intents.plan`: size each subscriber's position, check its limits and write its trade and order
   intents in one transaction, before anything is sent.
2. `dispatch.send_all`: send with bounded concurrency; a retry never creates a second order.
3. `record.record`: write each answer by the rule of `lifecycle.apply_report`, close what filled.

`send_and_record` is phases 2 and 3 for a batch of planned jobs: the fan-out and the reconciler's
stop-outs and take profits both go through it. `fan_out` runs every phase of one signal in one
event loop (balances, plan, send and record, spot take profits), timing each. The phases' names stay
importable from here.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.exchange.client import AiohttpPool
from xcoin_trading.live import event_loop
from xcoin_trading.live.context import market_of
from xcoin_trading.live.dispatch import Intent, Job, KeyRing, free_balances, send_all
from xcoin_trading.live.intents import PlanInput, mark_sending, plan, spot_take_profit_jobs, take_profits_of
from xcoin_trading.live.record import FanoutResult, record
from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.live.runner import Signal
from xcoin_trading.services.credentials import SEALED_COLUMNS, SealedKeys
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import OPEN_TRADE, UNRESOLVED, order_status_of
from xcoin_trading.store.models import BrokerCredential, Subscription

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
    each phase as `<prefix>send_ms` / `<prefix>record_ms` (and this thread's CPU ms in it as
    `<prefix>send_cpu_ms` / `<prefix>record_cpu_ms`); `then(session, closed)` runs in the
    recording transaction."""
    clock, cpu = time.perf_counter(), time.thread_time()
    await send_all(ctx.api_url, ctx.public_url, ctx.vault, jobs, ctx.concurrency, pool, keyring)
    sent, sent_cpu = time.perf_counter(), time.thread_time()
    with session_scope(ctx.settings) as session:
        closed = record(session, jobs, now, result)
        if then is not None:
            then(session, closed)
    if timings is not None:
        for name, ms in (("send_ms", sent - clock), ("record_ms", time.perf_counter() - sent),
                         ("send_cpu_ms", sent_cpu - cpu), ("record_cpu_ms", time.thread_time() - sent_cpu)):  # fmt: skip
            timings[prefix + name] = timings.get(prefix + name, 0) + int(ms * 1000)
    return closed


def fan_out(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal, now: datetime,
             allow_new: bool, **options: Any) -> FanoutResult:  # fmt: skip
    sizing = allow_new and signal.action in ("LONG", "SHORT") and not options.get("every_subscription")
    with _collector_paused():  # from the first row read: 10,000 accounts loaded set off full collections
        credentials = entry_credentials(ctx, strategy.id, options.get("only")) if sizing else []
        with _accounts_held([c.id for c in credentials]):
            return event_loop.run(
                _fan_out_async(
                    ctx, strategy, execution_id, signal, now, allow_new, credentials=credentials, **options
                )
            )


def entry_credentials(ctx: LiveContext, strategy_id: int, only: Any = None) -> list[SealedKeys]:
    """The accounts (active broker keys) of the strategy's active, unpaused subscribers (of a shard),
    in id order, once each."""
    with session_scope(ctx.settings) as session:
        query = (
            select(*SEALED_COLUMNS)
            .join(Subscription, Subscription.broker_credential_id == BrokerCredential.id)
            .where(
                Subscription.strategy_id == strategy_id,
                Subscription.is_active.is_(True),
                Subscription.is_paused.is_(False),
                BrokerCredential.is_active.is_(True),
            )
            .order_by(BrokerCredential.id)
        )
        out: dict[int, SealedKeys] = {}
        for row in session.execute(query if only is None else query.where(only)):
            if row[0] not in out:
                out[row[0]] = SealedKeys(*row)
    return list(out.values())


_account_locks: dict[int, threading.Lock] = {}
_account_locks_guard = threading.Lock()


@contextmanager
def _accounts_held(credential_ids: list[int]):
    """Strategies of one candle run at once; two whose subscribers share an account size their entries
    one after the other, each on the balance the other's orders left (locks taken in id order)."""
    with _account_locks_guard:
        locks = [_account_locks.setdefault(i, threading.Lock()) for i in sorted(set(credential_ids))]
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in reversed(locks):
            lock.release()


_quiet_fanouts = 0  # fan-outs running now (strategies of one candle run in threads)
_quiet_guard = threading.Lock()
_collector_was_enabled = True


@contextmanager
def _collector_paused():
    """No cyclic garbage collection while fan-outs run; what existed before is frozen (Dagster,
    polars, SQLAlchemy: a big heap that each full collection walked, ~0.15 s). A candle allocates
    per request (answers, futures, aiohttp's objects) and keeps every job to the end, so the
    collector ran hundreds of times per candle over the same live objects: ~30 % of the client's
    CPU at N = 2,000. Reference counting still frees all that is not a cycle; the cycles left
    (tens of MB at N = 10,000) are collected once the last fan-out ends."""
    global _quiet_fanouts, _collector_was_enabled
    with _quiet_guard:
        if _quiet_fanouts == 0:
            _collector_was_enabled = gc.isenabled()
            gc.freeze()
            gc.disable()
        _quiet_fanouts += 1
    try:
        yield
    finally:
        with _quiet_guard:
            _quiet_fanouts -= 1
            if _quiet_fanouts == 0:
                gc.unfreeze()
                if _collector_was_enabled:
                    gc.enable()


async def _fan_out_async(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal,
                         now: datetime, allow_new: bool, **options: Any) -> FanoutResult:  # fmt: skip
    """Every phase in one event loop over one connection pool: the take profits reuse the entries'
    connections. The store phases block the loop on purpose: nothing is in flight then."""
    pool = AiohttpPool(ctx.concurrency)
    try:
        return await _phases(ctx, strategy, execution_id, signal, now, allow_new, pool, **options)
    finally:
        await pool.aclose()


async def _phases(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal,
                  now: datetime, allow_new: bool, pool: AiohttpPool, **options: Any) -> FanoutResult:  # fmt: skip
    market = market_of(ctx, strategy.symbol)
    result = FanoutResult()
    clock = _Phases(result.timings)
    credentials = options.pop("credentials", None) or []
    balances = None
    keyring = ctx.balances_ahead.keyring(ctx.vault)  # keys decrypted ahead, if the run read balances
    if credentials:  # an entry: each account's free balance bounds what its subscriptions may spend
        with clock("balances_ms"):
            balances = ctx.balances_ahead.take([c.id for c in credentials], market.base)
            result.balances_read_ahead = len(balances)
            unread = [c for c in credentials if c.id not in balances]
            if unread:
                balances |= await free_balances(ctx.api_url, ctx.public_url, ctx.vault, unread, market.base,
                                                       ctx.concurrency, pool, keyring)  # fmt: skip
    plan_input = PlanInput(
        execution_id,
        strategy.id,
        signal,
        market,
        ctx.fee_rate,
        now,
        allow_new,
        free_balances=balances,
        **options,
    )
    with clock("plan_ms"), session_scope(ctx.settings) as session:
        jobs = plan(session, plan_input, result)
        mark_sending(session, jobs)
    if jobs:
        await send_and_record(ctx, jobs, now, result, pool=pool, timings=result.timings, keyring=keyring)
    if market.kind == "spot" and result.resumed:  # a fresh run sent each take profit after its entry
        with clock("tp_plan_ms"), session_scope(ctx.settings) as session:
            tp_jobs = spot_take_profit_jobs(session, execution_id, market, plan_input.only)
            mark_sending(session, tp_jobs)
        if tp_jobs:
            tp_result = FanoutResult()
            await send_and_record(
                ctx, tp_jobs, now, tp_result, pool=pool, timings=result.timings, prefix="tp_", keyring=keyring
            )
            for sub_id, outcome in tp_result.outcomes.items():
                if outcome["status"] in ("FAILED", "UNKNOWN"):
                    result.outcomes.setdefault(sub_id, {"status": "PLACED"})["take_profit_error"] = (
                        outcome.get("reason")
                    )
    return result


class _Phases:
    """Wall time per fan-out phase, and the CPU time of the fan-out's thread in it (`<name>_cpu_ms`:
    what the phase itself cost, whatever else the host ran), kept on the execution row
    (`details.timings`)."""

    def __init__(self, into: dict[str, int]):
        self.into = into

    @contextmanager
    def __call__(self, name: str):
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            cpu_name = name.removesuffix("_ms") + "_cpu_ms"
            self.into[name] = self.into.get(name, 0) + int((time.perf_counter() - started) * 1000)
            self.into[cpu_name] = self.into.get(cpu_name, 0) + int((time.thread_time() - cpu) * 1000)
