"""One candle close of one (symbol, resolution): each strategy on it runs once and its signal fans out.

Exactly once per (strategy, candle): a Redis lock (TTL 10× the resolution, never released early)
saves work; the unique `(strategy_id, interval_key)` row in `strategy_executions` is the guarantee.
A run that finds the row RUNNING under a dead worker takes it over and resumes: the recorded
signal is reused (the strategy never runs twice) and the recorded intents are resolved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import polars as pl
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from xcoin_trading.errors import ValidationError, XcoinError
from xcoin_trading.exchange.client import CoinDCXClient
from xcoin_trading.exchange.errors import (
    ExchangeTimeout,
    ExchangeUnavailable,
    RateLimited,
    ServerError,
)
from xcoin_trading.live import fanout
from xcoin_trading.live.balances import read_now
from xcoin_trading.live.context import LiveContext, live_context, market_of  # noqa: F401 - live_context: callers import it from here
from xcoin_trading.live.dispatch import KeyRing
from xcoin_trading.live.locks import holder_is_dead
from xcoin_trading.live.registry import StrategySettings, candle_key
from xcoin_trading.live.runner import Signal, last_signal, run_strategy
from xcoin_trading.store.db import rows_changed, session_scope
from xcoin_trading.store.lifecycle import FINISHED_EXECUTION
from xcoin_trading.store.models import StrategyExecution, Trade
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
            accounts = {c.id: c for s in strategies for c in fanout.entry_credentials(ctx, s.id, only)}
            currency, started = market_of(ctx, symbol).base, time.monotonic()
            keyring = KeyRing(ctx.vault)  # the keys decrypted for the reads serve the close too
            read = read_now(ctx.api_url, ctx.public_url, ctx.vault, list(accounts.values()), currency,
                            ctx.concurrency, keyring)  # fmt: skip
            ctx.balances_ahead.put(currency, read, at=started)  # aged from when the reads began
            ctx.balances_ahead.put_keys(keyring, at=started)
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


def claim_execution(
    ctx: LiveContext, strategy: StrategySettings, key: str, close_time: datetime, now: datetime | None = None
) -> tuple[int, bool, str]:
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
        row = session.scalars(
            select(StrategyExecution).where(
                StrategyExecution.strategy_id == strategy.id, StrategyExecution.interval_key == key
            )
        ).one()
        if row.status == "FAILED" and _retryable(row, strategy, close_time, now or utcnow(), ctx):
            retried = rows_changed(
                session,
                update(StrategyExecution)
                .where(StrategyExecution.id == row.id, StrategyExecution.status == "FAILED")
                .values(status="RUNNING", worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id,
                        error=None, details=None, finished_at=None, started_at=utcnow(), updated_at=utcnow()),
            )  # fmt: skip
            return row.id, bool(retried), "RETRIED" if retried else "IN_PROGRESS"
        if row.status in FINISHED_EXECUTION:
            return row.id, False, "ALREADY_DONE"
        if row.worker_id != ctx.worker_id and not holder_is_dead(row.worker_id or ""):
            return row.id, False, "IN_PROGRESS"
        taken = rows_changed(
            session,
            update(StrategyExecution)
            .where(StrategyExecution.id == row.id, StrategyExecution.worker_id == row.worker_id)
            .values(worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id, updated_at=utcnow()),
        )
        return row.id, bool(taken), "RESUMED" if taken else "IN_PROGRESS"


class CandleNotPublished(XcoinError):
    """The exchange has no candle for this close yet: worth another try while the candle is fresh."""


TRANSIENT = (CandleNotPublished, ExchangeUnavailable, ExchangeTimeout, ServerError, RateLimited)


def _retryable(row: StrategyExecution, strategy: StrategySettings, close_time: datetime, now: datetime,
               ctx: LiveContext) -> bool:  # fmt: skip
    from xcoin_trading.live.retries import may_retry

    return may_retry(row.details, strategy.resolution, close_time, now, ctx.staleness_fraction)


def finish_execution(ctx: LiveContext, execution_id: int, started: float, **values: Any) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get_one(StrategyExecution, execution_id)
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
    execution_id, resumed, state = claim_execution(ctx, strategy, key, close_time, now)
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
                finish_execution(ctx, execution_id, started, status="SKIPPED", error=report.error)
                return report
            fetching = time.perf_counter()
            candles = _fetch_candles(ctx, strategy, close_time, step)
            running = time.perf_counter()
            signal = last_signal(run_strategy(strategy, candles, ctx.sandbox, deadline=deadline), candles)
            # Where a candle's latency goes before the fan-out (benchmarks/candle_latency.py reports it).
            before_fan_out = {"candles_ms": int((running - fetching) * 1000),
                              "strategy_ms": int((time.perf_counter() - running) * 1000)}  # fmt: skip
            with session_scope(ctx.settings) as session:  # committed before any order: a resume reuses it
                row = session.get_one(StrategyExecution, execution_id)
                row.signal, row.signal_price = signal.action, signal.price
                row.signal_stop_loss, row.signal_take_profit = signal.stop_loss, signal.take_profit
                row.details = {"timings": before_fan_out}  # kept when a sharded fan-out completes it
        report.signal = signal.action
        if signal.action == "HOLD":
            report.status = "NO_SIGNAL"
            finish_execution(ctx, execution_id, started, status="NO_SIGNAL")
            return report
        if signal_only:  # the shards fan it out (live/shards.py) and complete the execution
            report.status = "SIGNALLED"
            return report
        result = fanout.fan_out(ctx, strategy, execution_id, signal, now, allow_new=not late)
        report.status, report.outcomes = "COMPLETED", result.outcomes
        failures = {k: v for k, v in result.outcomes.items() if v["status"] in ("FAILED", "UNKNOWN")}
        with session_scope(ctx.settings) as session:  # counted from the store: right after a resume too
            trades = (
                session.scalar(
                    select(func.count()).select_from(Trade).where(Trade.execution_id == execution_id)
                )
                or 0
            )
        report.subscribers, report.trades_created = len(result.outcomes), trades
        finish_execution(
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
        finish_execution(ctx, execution_id, started, status="FAILED", error=str(exc)[:2000],
                details={"retryable": True} if retryable else None)  # fmt: skip
        if retryable:  # the next tick (another worker) may take the candle while it is fresh
            ctx.locks.release(f"{ctx.namespace}:{strategy.id}:{key}", ctx.worker_id)
    except BaseException as exc:
        # A bug of ours, or a Rust panic in polars/pyarrow (pyo3's PanicException, a BaseException):
        # recorded and logged, and the candle's other strategies still run. An interrupt is not ours.
        if not isinstance(exc, Exception | pl.exceptions.PanicException):
            raise
        log.exception("execution %s of %s failed", key, strategy.code)
        report.status, report.error = "FAILED", f"{type(exc).__name__}: {exc}"
        finish_execution(ctx, execution_id, started, status="FAILED", error=report.error[:2000])
    return report


def recorded_signal(ctx: LiveContext, execution_id: int) -> Signal | None:
    with session_scope(ctx.settings) as session:
        row = session.get_one(StrategyExecution, execution_id)
        if row.signal is None or row.signal_price is None:
            return None
        return Signal(row.signal, row.signal_price, row.signal_stop_loss, row.signal_take_profit, 0)
