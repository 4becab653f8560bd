"""One candle close of one (symbol, resolution): each strategy on it runs once and its signal fans out.

Exactly once per (strategy, candle): a Redis lock (TTL 10× the resolution, never released early)
saves work; the unique `(strategy_id, interval_key)` row in `strategy_executions` is the guarantee.
A run that finds the row RUNNING under a dead worker takes it over and resumes: the recorded
signal is reused (the strategy never runs twice) and the recorded intents are resolved.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import polars as pl
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from xcoin_trading.errors import ValidationError, XcoinError
from xcoin_trading.exchange.client import AiohttpPool, CoinDCXClient
from xcoin_trading.exchange.errors import (
    ExchangeTimeout,
    ExchangeUnavailable,
    RateLimited,
    ServerError,
)
from xcoin_trading.exchange.markets import Market
from xcoin_trading.live import fanout
from xcoin_trading.live.balances import read_now
from xcoin_trading.live.context import LiveContext, live_context  # noqa: F401 - live_context: callers import it from here
from xcoin_trading.live.locks import holder_is_dead
from xcoin_trading.live.registry import StrategySettings, candle_key
from xcoin_trading.live.runner import Signal, last_signal, run_strategy
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.lifecycle import FINISHED_EXECUTION, OPEN_TRADE, Leg, OrderStatus, TradeStatus
from xcoin_trading.store.models import BrokerCredential, StrategyExecution, Subscription, Trade
from xcoin_trading.strategy.sandbox import prewarm
from xcoin_trading.timeframes import floor_ms, interval_key, resolution_ms, to_ms, utcnow

PUBLICATION_GRACE = timedelta(seconds=3)  # how long after a close its candle may still be missing
log = logging.getLogger(__name__)


@dataclass
class ExecutionReport:
    strategy_id: int
    strategy_code: str
    interval_key: str
    status: str  # an execution status, or LOCKED / ALREADY_DONE / IN_PROGRESS when we did nothing
    signal: str | None = None
    subscribers: int = 0
    trades_created: int = 0
    error: str | None = None
    execution_id: int | None = None
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)


R = TypeVar("R")


def _due(ctx: LiveContext, symbol: str, resolution: str) -> list[StrategySettings]:
    with session_scope(ctx.settings) as session:
        return ctx.registry.strategies_for(session, candle_key(symbol, resolution))


def _sandboxed(strategies: list[StrategySettings]) -> int:
    return sum(1 for s in strategies if not s.builtin and s.source)


def prepare_candle(
    ctx: LiveContext, symbol: str, resolution: str, only: Any = None,
    runs_here: Callable[[StrategySettings], bool] | None = None,
) -> int:  # fmt: skip
    """Work a run launched ahead of its candle does while it waits: start a spare sandbox per uploaded
    strategy due on the candle that this process is to run (`runs_here`; up to MAX_SPARES), so every
    interpreter is loaded at the close, and read the free balances of their subscribers' accounts (of
    the shard `only`; live/balances.py). Returns the number of sandboxes."""
    strategies = _due(ctx, symbol, resolution)
    sandboxed = _sandboxed([s for s in strategies if runs_here is None or runs_here(s)])
    if sandboxed:
        prewarm(ctx.sandbox, sandboxed)
    if strategies:
        try:
            accounts = {c.id: c for s in strategies for c in _entry_credentials(ctx, s.id, only)}
            currency, started = _market(ctx, symbol).base, time.monotonic()
            read = read_now(ctx.api_url, ctx.public_url, ctx.vault, list(accounts.values()), currency,
                            ctx.concurrency)  # fmt: skip
            ctx.balances_ahead.put(currency, read, at=started)  # aged from when the reads began
            log.info("read %d of %d accounts' balances ahead of the %s %s close", len(read), len(accounts),
                     symbol, resolution)  # fmt: skip
        except Exception:  # noqa: BLE001 - a failed read ahead costs latency only: the close reads them
            log.warning("balances could not be read ahead of the close", exc_info=True)
    return sandboxed


def on_each_strategy(
    ctx: LiveContext, symbol: str, resolution: str, close_time: datetime, now: datetime | None,
    run: Callable[[StrategySettings, datetime, int, float], R],
    runs_here: Callable[[StrategySettings], bool] | None = None,
) -> list[R]:  # fmt: skip
    """`run(strategy, now, step, deadline)` for every strategy registered on this candle, in a bounded
    pool: one slow or failing strategy never delays or affects another. Sandboxes are started for
    the strategies this process is to run (`runs_here`, default all)."""
    step = resolution_ms(resolution)
    close_ms = to_ms(close_time)
    if floor_ms(close_ms, resolution) != close_ms:
        raise ValidationError("close_time", f"{close_time.isoformat()} is not a {resolution} candle boundary")
    strategies = _due(ctx, symbol, resolution)
    now = now or utcnow()
    sandboxed = _sandboxed([s for s in strategies if runs_here is None or runs_here(s)])
    if sandboxed:  # their interpreters load while the candle's claims and candle fetches run
        prewarm(ctx.sandbox, min(sandboxed, ctx.strategy_pool))
    # Each sandbox's wall clock runs from the candle's close (as `now` tells it), pool wait included.
    deadline = time.time() + ctx.sandbox.wall_seconds - (now - close_time).total_seconds()
    if len(strategies) <= 1:
        return [run(s, now, step, deadline) for s in strategies]
    with ThreadPoolExecutor(min(ctx.strategy_pool, len(strategies)), thread_name_prefix="strategy") as pool:
        return list(pool.map(lambda s: run(s, now, step, deadline), strategies))


def run_candle_close(
    ctx: LiveContext, symbol: str, resolution: str, close_time: datetime, now: datetime | None = None
) -> list[ExecutionReport]:
    """Run every strategy registered on this candle once and fan each signal out."""
    return on_each_strategy(
        ctx, symbol, resolution, close_time, now,
        lambda s, at, step, deadline: execute(ctx, s, close_time, at, step, deadline=deadline),
    )  # fmt: skip


def _claim(
    ctx: LiveContext, strategy: StrategySettings, key: str, close_time: datetime, now: datetime | None = None
) -> tuple[int | None, bool, str]:
    """(execution id, resumed, state). Inserting the row is the claim; a dead worker's row is taken over.
    A row FAILED for a transient cause (`details.retryable`) is claimed again while the candle is
    still fresh; it resumes, so a signal it recorded is reused and any intent is resolved first."""
    try:
        with session_scope(ctx.settings) as session:
            row = StrategyExecution(strategy_id=strategy.id, interval_key=key, scheduled_at=close_time,
                                    started_at=utcnow(), status="RUNNING", worker_id=ctx.worker_id,
                                    dagster_run_id=ctx.dagster_run_id)  # fmt: skip
            session.add(row)
            session.flush()
            return row.id, False, "NEW"
    except IntegrityError:
        pass
    with session_scope(ctx.settings) as session:
        row = session.scalar(
            select(StrategyExecution).where(
                StrategyExecution.strategy_id == strategy.id, StrategyExecution.interval_key == key
            )
        )
        if row.status == "FAILED" and _retryable(row, strategy, close_time, now or utcnow(), ctx):
            retried = session.execute(
                update(StrategyExecution)
                .where(StrategyExecution.id == row.id, StrategyExecution.status == "FAILED")
                .values(status="RUNNING", worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id,
                        error=None, details=None, finished_at=None, started_at=utcnow(), updated_at=utcnow())
            ).rowcount  # fmt: skip
            return row.id, bool(retried), "RETRIED" if retried else "IN_PROGRESS"
        if row.status in FINISHED_EXECUTION:
            return row.id, False, "ALREADY_DONE"
        if row.worker_id != ctx.worker_id and not holder_is_dead(row.worker_id or ""):
            return row.id, False, "IN_PROGRESS"
        taken = session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == row.id, StrategyExecution.worker_id == row.worker_id)
            .values(worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id, updated_at=utcnow())
        ).rowcount
        return row.id, bool(taken), "RESUMED" if taken else "IN_PROGRESS"


class CandleNotPublished(XcoinError):
    """The exchange has no candle for this close yet: worth another try while the candle is fresh."""


TRANSIENT = (CandleNotPublished, ExchangeUnavailable, ExchangeTimeout, ServerError, RateLimited)


def _retryable(row: StrategyExecution, strategy: StrategySettings, close_time: datetime, now: datetime,
               ctx: LiveContext) -> bool:  # fmt: skip
    from xcoin_trading.live.retries import may_retry

    return may_retry(row.details, strategy.resolution, close_time, now, ctx.staleness_fraction)


def _finish(ctx: LiveContext, execution_id: int, started: float, **values: Any) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get(StrategyExecution, execution_id)
        for name, value in values.items():
            setattr(row, name, value)
        row.finished_at = utcnow()
        row.duration_ms = int((time.perf_counter() - started) * 1000)


def _fetch_candles(
    ctx: LiveContext, strategy: StrategySettings, close_time: datetime, step: int
) -> pl.DataFrame:
    end = to_ms(close_time)
    start = end - strategy.lookback * step
    with CoinDCXClient(ctx.api_url, ctx.public_url) as client:
        candles = client.fetch_candles(strategy.symbol, strategy.resolution, start, end)
        # A run that waited for the close asks at the close itself: give the exchange a moment to publish.
        while (candles.height == 0 or int(candles["open_time"][-1]) != end - step) and (
            utcnow() - close_time < PUBLICATION_GRACE
        ):
            time.sleep(0.2)
            candles = client.fetch_candles(strategy.symbol, strategy.resolution, start, end)
    if candles.height == 0 or int(candles["open_time"][-1]) != end - step:
        last = "none" if candles.height == 0 else str(int(candles["open_time"][-1]))
        raise CandleNotPublished(
            f"the exchange has not published the {strategy.resolution} candle that closed at "
            f"{close_time.isoformat()} (last candle open time: {last})"
        )
    return candles


def _market(ctx: LiveContext, symbol: str) -> Market:
    with CoinDCXClient(ctx.api_url, ctx.public_url) as client:
        if "-" in symbol:  # futures pair: instrument metadata is served per pair
            from xcoin_trading.exchange.catalog import default_market

            return default_market(symbol)
        return client.market(symbol)


def execute(
    ctx: LiveContext,
    strategy: StrategySettings,
    close_time: datetime,
    now: datetime,
    step: int,
    *,
    deadline: float | None = None,  # time.time() by which its sandbox must have answered
    signal_only: bool = False,  # a sharded fan-out: stop once the signal is recorded (SIGNALLED)
) -> ExecutionReport:
    key = interval_key(close_time, strategy.resolution)
    report = ExecutionReport(strategy.id, strategy.code, key, "LOCKED")
    if not ctx.locks.acquire(
        f"{ctx.namespace}:{strategy.id}:{key}", ctx.worker_id, ttl_seconds=max(60, 10 * step // 1000)
    ):
        return report
    execution_id, resumed, state = _claim(ctx, strategy, key, close_time, now)
    report.execution_id = execution_id
    if state in ("ALREADY_DONE", "IN_PROGRESS"):
        report.status = state
        return report
    started = time.perf_counter()
    late = now - close_time > timedelta(milliseconds=step * ctx.staleness_fraction)
    before_fan_out: dict[str, int] = {}
    try:
        signal = recorded_signal(ctx, execution_id) if resumed else None
        if signal is None:
            if late:
                report.status, report.error = (
                    "SKIPPED",
                    f"started {now - close_time} after the close; limit {timedelta(milliseconds=step * ctx.staleness_fraction)}",
                )
                _finish(ctx, execution_id, started, status="SKIPPED", error=report.error)
                return report
            fetching = time.perf_counter()
            candles = _fetch_candles(ctx, strategy, close_time, step)
            running = time.perf_counter()
            signal = last_signal(run_strategy(strategy, candles, ctx.sandbox, deadline=deadline), candles)
            # Where a candle's latency goes before the fan-out (benchmarks/candle_latency.py reports it).
            before_fan_out = {"candles_ms": int((running - fetching) * 1000),
                              "strategy_ms": int((time.perf_counter() - running) * 1000)}  # fmt: skip
            with session_scope(ctx.settings) as session:  # committed before any order: a resume reuses it
                row = session.get(StrategyExecution, execution_id)
                row.signal, row.signal_price = signal.action, signal.price
                row.signal_stop_loss, row.signal_take_profit = signal.stop_loss, signal.take_profit
                row.details = {"timings": before_fan_out}  # kept when a sharded fan-out completes it
        report.signal = signal.action
        if signal.action == "HOLD":
            report.status = "NO_SIGNAL"
            _finish(ctx, execution_id, started, status="NO_SIGNAL")
            return report
        if signal_only:  # the shards fan it out (live/shards.py) and complete the execution
            report.status = "SIGNALLED"
            return report
        result = fan_out(ctx, strategy, execution_id, signal, now, allow_new=not late)
        report.status, report.outcomes = "COMPLETED", result.outcomes
        failures = {k: v for k, v in result.outcomes.items() if v["status"] in ("FAILED", "UNKNOWN")}
        with session_scope(ctx.settings) as session:  # counted from the store: right after a resume too
            trades = session.scalar(
                select(func.count()).select_from(Trade).where(Trade.execution_id == execution_id)
            )
        report.subscribers, report.trades_created = len(result.outcomes), trades
        _finish(
            ctx, execution_id, started, status="COMPLETED", subscribers_count=len(result.outcomes),
            trades_created=trades,
            details={"outcomes": {str(k): v for k, v in result.outcomes.items()},
                     "timings": {**before_fan_out, **result.timings},
                     "balances_read_ahead": result.balances_read_ahead},
            error=f"{len(failures)} subscriber(s) failed" if failures else None,
        )  # fmt: skip
    except XcoinError as exc:
        report.status, report.error = "FAILED", str(exc)
        retryable = isinstance(exc, TRANSIENT)
        _finish(ctx, execution_id, started, status="FAILED", error=str(exc)[:2000],
                details={"retryable": True} if retryable else None)  # fmt: skip
        if retryable:  # the next tick (another worker) may take the candle while it is fresh
            ctx.locks.release(f"{ctx.namespace}:{strategy.id}:{key}", ctx.worker_id)
    except (
        Exception
    ) as exc:  # a bug of ours: recorded and logged, and the candle's other strategies still run
        log.exception("execution %s of %s failed", key, strategy.code)
        report.status, report.error = "FAILED", f"{type(exc).__name__}: {exc}"
        _finish(ctx, execution_id, started, status="FAILED", error=report.error[:2000])
    return report


def recorded_signal(ctx: LiveContext, execution_id: int) -> Signal | None:
    with session_scope(ctx.settings) as session:
        row = session.get(StrategyExecution, execution_id)
        if row.signal is None:
            return None
        return Signal(row.signal, row.signal_price, row.signal_stop_loss, row.signal_take_profit, 0)


def fan_out(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal, now: datetime,
             allow_new: bool, **plan: Any) -> fanout.FanoutResult:  # fmt: skip
    sizing = allow_new and signal.action in ("LONG", "SHORT") and not plan.get("every_subscription")
    credentials = _entry_credentials(ctx, strategy.id, plan.get("only")) if sizing else []
    with _accounts_held([c.id for c in credentials]), _heap_frozen():
        return asyncio.run(
            _fan_out_async(
                ctx, strategy, execution_id, signal, now, allow_new, credentials=credentials, **plan
            )
        )


def _entry_credentials(ctx: LiveContext, strategy_id: int, only: Any = None) -> list[BrokerCredential]:
    """The accounts (active broker keys) of the strategy's active, unpaused subscribers (of a shard)."""
    with session_scope(ctx.settings) as session:
        query = (
            select(BrokerCredential)
            .join(Subscription, Subscription.broker_credential_id == BrokerCredential.id)
            .where(
                Subscription.strategy_id == strategy_id,
                Subscription.is_active.is_(True),
                Subscription.is_paused.is_(False),
                BrokerCredential.is_active.is_(True),
            )
            .order_by(BrokerCredential.id)
        )
        rows = session.scalars(query if only is None else query.where(only)).all()
        session.expunge_all()
    return list({c.id: c for c in rows}.values())


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


@contextmanager
def _heap_frozen():
    """Full collections skip what existed before the fan-out (Dagster, polars, SQLAlchemy: a big
    heap): each one walked all of it, ~0.15 s, several times per candle at N=1000. Only the
    fan-out's own objects are scanned; `unfreeze` hands the rest back to the collector after."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _fan_out_async(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal,
                         now: datetime, allow_new: bool, **plan: Any) -> fanout.FanoutResult:  # fmt: skip
    """Every phase in one event loop over one connection pool: the take profits reuse the entries'
    connections. The store phases block the loop on purpose: nothing is in flight then."""
    pool = AiohttpPool(ctx.concurrency)
    try:
        return await _phases(ctx, strategy, execution_id, signal, now, allow_new, pool, **plan)
    finally:
        await pool.aclose()


async def _phases(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal,
                  now: datetime, allow_new: bool, pool: AiohttpPool, **plan: Any) -> fanout.FanoutResult:  # fmt: skip
    market = _market(ctx, strategy.symbol)
    result = fanout.FanoutResult()
    clock = _Phases(result.timings)
    credentials = plan.pop("credentials", None) or []
    balances = None
    keyring = fanout.KeyRing(ctx.vault)
    if credentials:  # an entry: each account's free balance bounds what its subscriptions may spend
        with clock("balances_ms"):
            balances = ctx.balances_ahead.take([c.id for c in credentials], market.base)
            result.balances_read_ahead = len(balances)
            unread = [c for c in credentials if c.id not in balances]
            if unread:
                balances |= await fanout.free_balances(ctx.api_url, ctx.public_url, ctx.vault, unread, market.base,
                                                       ctx.concurrency, pool, keyring)  # fmt: skip
    plan_input = fanout.PlanInput(
        execution_id,
        strategy.id,
        signal,
        market,
        ctx.fee_rate,
        now,
        allow_new,
        free_balances=balances,
        **plan,
    )
    with clock("plan_ms"), session_scope(ctx.settings) as session:
        jobs = fanout.plan(session, plan_input, result)
        fanout.mark_sending(session, jobs)
    if jobs:
        await fanout.send_and_record(
            ctx, jobs, now, result, pool=pool, timings=result.timings, keyring=keyring
        )
    if market.kind == "spot" and result.resumed:  # a fresh run sent each take profit after its entry
        with clock("tp_plan_ms"), session_scope(ctx.settings) as session:
            tp_jobs = fanout.spot_take_profit_jobs(session, execution_id, market, plan_input.only)
            fanout.mark_sending(session, tp_jobs)
        if tp_jobs:
            tp_result = fanout.FanoutResult()
            await fanout.send_and_record(
                ctx, tp_jobs, now, tp_result, pool=pool, timings=result.timings, prefix="tp_", keyring=keyring
            )
            for sub_id, outcome in tp_result.outcomes.items():
                if outcome["status"] in ("FAILED", "UNKNOWN"):
                    result.outcomes.setdefault(sub_id, {"status": "PLACED"})["take_profit_error"] = (
                        outcome.get("reason")
                    )
    return result


class _Phases:
    """Wall time per fan-out phase, kept on the execution row (`details.timings`)."""

    def __init__(self, into: dict[str, int]):
        self.into = into

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.into[name] = self.into.get(name, 0) + int((time.perf_counter() - started) * 1000)


RUNNING_FLATTEN = "running_flatten"  # the one key a strategy's running flatten holds (unique per strategy)


def _retire_flatten_key(row: StrategyExecution) -> None:
    """A finished flatten gives the running key up: `<start>_<id>_flatten` (unique: it has the id)."""
    stamp = (row.started_at or row.scheduled_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    row.interval_key = f"{stamp}_{row.id}_flatten"


def _claim_flatten(
    ctx: LiveContext, strategy: StrategySettings, now: datetime
) -> tuple[int | None, bool, str]:
    """At most one flatten of a strategy runs: its row holds the key `running_flatten`. A re-run after
    a crash takes the dead one's row over (RESUMED: its intents are resolved by client id before
    anything is sent again); one whose worker is alive is IN_PROGRESS."""
    for _ in range(2):
        execution_id, resumed, state = _claim(ctx, strategy, RUNNING_FLATTEN, now)
        if state != "ALREADY_DONE":
            return execution_id, resumed, state
        with session_scope(ctx.settings) as session:  # closed by someone else (e.g. the run-failure sensor)
            _retire_flatten_key(session.get(StrategyExecution, execution_id))
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
    from xcoin_trading.store.models import Order, Subscription

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
        row = session.get(StrategyExecution, execution_id)
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
                why = result.outcomes.get(sub_id, {}).get("reason")
                why = why or ("an earlier exit's outcome is still unknown" if set(still) & set(waiting)
                              else "its entry's outcome is still unknown" if any(
                                  session.get(Trade, t).status == TradeStatus.PENDING for t in still)
                              else "the exchange did not confirm the exit")  # fmt: skip
                outcomes[sub_id] = {"status": "NOT_CLOSED", "reason": why, "open_trades": still}
            elif mine:
                pnl = sum((t.pnl for t in mine), Decimal(0))
                outcomes[sub_id] = {"status": "CLOSED", "trades": sorted(t.id for t in mine), "pnl": str(pnl)}
            else:
                outcomes[sub_id] = {"status": "ALREADY_FLAT"}
    failures = [k for k, v in outcomes.items() if v["status"] == "NOT_CLOSED"]
    report.outcomes, report.subscribers = outcomes, len(outcomes)
    report.error = f"{len(failures)} subscriber(s) could not be closed" if failures else None
    with session_scope(ctx.settings) as session:
        row = session.get(StrategyExecution, execution_id)
        _retire_flatten_key(row)
        report.interval_key = row.interval_key
    _finish(ctx, execution_id, started, status="COMPLETED", subscribers_count=len(outcomes), error=report.error,
            details={"outcomes": {str(k): v for k, v in outcomes.items()}, "timings": result.timings})  # fmt: skip
    return report


def flatten_all(ctx: LiveContext, now: datetime | None = None) -> list[ExecutionReport]:
    """`flatten` for every strategy that has a subscription (one after the other, same path)."""
    from xcoin_trading.store.models import Strategy, Subscription

    with session_scope(ctx.settings) as session:
        rows = session.scalars(
            select(Strategy).where(Strategy.id.in_(select(Subscription.strategy_id))).order_by(Strategy.id)
        ).all()
        strategies = [StrategySettings.from_row(r) for r in rows]
    return [flatten(ctx, s, now) for s in strategies]
