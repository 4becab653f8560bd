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
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import ValidationError, XcoinError
from xcoin_trading.exchange.client import AiohttpPool, CoinDCXClient
from xcoin_trading.exchange.markets import Market
from xcoin_trading.live import fanout
from xcoin_trading.live.locks import Locks, holder_is_dead, make_locks, worker_identity
from xcoin_trading.live.registry import Registry, StrategySettings, candle_key, make_registry, store_namespace
from xcoin_trading.live.runner import Signal, last_signal, run_strategy
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import StrategyExecution, Trade
from xcoin_trading.strategy.sandbox import SandboxLimits, prewarm
from xcoin_trading.timeframes import floor_ms, interval_key, resolution_ms, to_ms, utcnow
from xcoin_trading.vault import Vault

log = logging.getLogger(__name__)
TERMINAL = ("COMPLETED", "FAILED", "SKIPPED", "NO_SIGNAL")


@dataclass
class LiveContext:
    settings: Settings
    api_url: str
    public_url: str
    locks: Locks
    registry: Registry
    vault: Vault
    worker_id: str = field(default_factory=worker_identity)
    staleness_fraction: float = 1 / 3  # of the candle: later than this after the close, skip
    fee_rate: Decimal = Decimal("0.001")  # sizing keeps margin + entry fee within capital
    concurrency: int = 200
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    strategy_pool: int = 8  # strategies of one candle run at once: a slow one delays none of the others
    namespace: str = "default"  # store_namespace(settings): prefixes lock keys
    dagster_run_id: str | None = None  # recorded on the rows this run claims (run-failure sensor)


def live_context(settings: Settings | None = None, **overrides: Any) -> LiveContext:
    settings = settings or get_settings()
    from xcoin_trading.exchange.embedded import exchange_urls

    api, public = exchange_urls(settings)
    ns = store_namespace(settings)
    return LiveContext(
        settings=settings, api_url=api, public_url=public, locks=make_locks(settings.redis_url),
        registry=make_registry(settings.redis_url, ns), vault=Vault.from_settings(settings), namespace=ns,
        **{"concurrency": settings.fanout_concurrency, **overrides},
    )  # fmt: skip


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


def run_candle_close(
    ctx: LiveContext, symbol: str, resolution: str, close_time: datetime, now: datetime | None = None
) -> list[ExecutionReport]:
    """Run every strategy registered on this candle; one failing strategy never affects another."""
    step = resolution_ms(resolution)
    close_ms = to_ms(close_time)
    if floor_ms(close_ms, resolution) != close_ms:
        raise ValidationError("close_time", f"{close_time.isoformat()} is not a {resolution} candle boundary")
    with session_scope(ctx.settings) as session:
        strategies = ctx.registry.strategies_for(session, candle_key(symbol, resolution))
    now = now or utcnow()
    sandboxed = sum(1 for s in strategies if not s.builtin and s.source)
    if sandboxed:  # their interpreters load while the candle's claims and candle fetches run
        prewarm(ctx.sandbox, min(sandboxed, ctx.strategy_pool))
    # Each sandbox's wall clock runs from the candle's close (as `now` tells it), pool wait included.
    deadline = time.time() + ctx.sandbox.wall_seconds - (now - close_time).total_seconds()
    if len(strategies) <= 1:
        return [execute(ctx, s, close_time, now, step, deadline=deadline) for s in strategies]
    with ThreadPoolExecutor(min(ctx.strategy_pool, len(strategies)), thread_name_prefix="strategy") as pool:
        return list(pool.map(lambda s: execute(ctx, s, close_time, now, step, deadline=deadline), strategies))


def _claim(
    ctx: LiveContext, strategy: StrategySettings, key: str, close_time: datetime
) -> tuple[int | None, bool, str]:
    """(execution id, resumed, state). Inserting the row is the claim; a dead worker's row is taken over."""
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
        if row.status in TERMINAL:
            return row.id, False, "ALREADY_DONE"
        if row.worker_id != ctx.worker_id and not holder_is_dead(row.worker_id or ""):
            return row.id, False, "IN_PROGRESS"
        taken = session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == row.id, StrategyExecution.worker_id == row.worker_id)
            .values(worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id, updated_at=utcnow())
        ).rowcount
        return row.id, bool(taken), "RESUMED" if taken else "IN_PROGRESS"


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
    if candles.height == 0 or int(candles["open_time"][-1]) != end - step:
        last = "none" if candles.height == 0 else str(int(candles["open_time"][-1]))
        raise XcoinError(
            f"the exchange has not published the {strategy.resolution} candle that closed at "
            f"{close_time.isoformat()} (last candle open time: {last})"
        )
    return candles


def _market(ctx: LiveContext, symbol: str) -> Market:
    with CoinDCXClient(ctx.api_url, ctx.public_url) as client:
        if "-" in symbol:  # futures pair: instrument metadata is served per pair
            from xcoin_trading.exchange.markets import default_market

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
) -> ExecutionReport:
    key = interval_key(close_time, strategy.resolution)
    report = ExecutionReport(strategy.id, strategy.code, key, "LOCKED")
    if not ctx.locks.acquire(
        f"{ctx.namespace}:{strategy.id}:{key}", ctx.worker_id, ttl_seconds=max(60, 10 * step // 1000)
    ):
        return report
    execution_id, resumed, state = _claim(ctx, strategy, key, close_time)
    report.execution_id = execution_id
    if state in ("ALREADY_DONE", "IN_PROGRESS"):
        report.status = state
        return report
    started = time.perf_counter()
    late = now - close_time > timedelta(milliseconds=step * ctx.staleness_fraction)
    try:
        signal = _recorded_signal(ctx, execution_id) if resumed else None
        if signal is None:
            if late:
                report.status, report.error = (
                    "SKIPPED",
                    f"started {now - close_time} after the close; limit {timedelta(milliseconds=step * ctx.staleness_fraction)}",
                )
                _finish(ctx, execution_id, started, status="SKIPPED", error=report.error)
                return report
            candles = _fetch_candles(ctx, strategy, close_time, step)
            signal = last_signal(run_strategy(strategy, candles, ctx.sandbox, deadline=deadline), candles)
            with session_scope(ctx.settings) as session:  # committed before any order: a resume reuses it
                row = session.get(StrategyExecution, execution_id)
                row.signal, row.signal_price = signal.action, signal.price
                row.signal_stop_loss, row.signal_take_profit = signal.stop_loss, signal.take_profit
        report.signal = signal.action
        if signal.action == "HOLD":
            report.status = "NO_SIGNAL"
            _finish(ctx, execution_id, started, status="NO_SIGNAL")
            return report
        result = _fan_out(ctx, strategy, execution_id, signal, now, allow_new=not late)
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
            details={"outcomes": {str(k): v for k, v in result.outcomes.items()}, "timings": result.timings},
            error=f"{len(failures)} subscriber(s) failed" if failures else None,
        )  # fmt: skip
    except XcoinError as exc:
        report.status, report.error = "FAILED", str(exc)
        _finish(ctx, execution_id, started, status="FAILED", error=str(exc)[:2000])
    except (
        Exception
    ) as exc:  # a bug of ours: recorded and logged, and the candle's other strategies still run
        log.exception("execution %s of %s failed", key, strategy.code)
        report.status, report.error = "FAILED", f"{type(exc).__name__}: {exc}"
        _finish(ctx, execution_id, started, status="FAILED", error=report.error[:2000])
    return report


def _recorded_signal(ctx: LiveContext, execution_id: int) -> Signal | None:
    with session_scope(ctx.settings) as session:
        row = session.get(StrategyExecution, execution_id)
        if row.signal is None:
            return None
        return Signal(row.signal, row.signal_price, row.signal_stop_loss, row.signal_take_profit, 0)


def _fan_out(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal, now: datetime,
             allow_new: bool) -> fanout.FanoutResult:  # fmt: skip
    with _heap_frozen():
        return asyncio.run(_fan_out_async(ctx, strategy, execution_id, signal, now, allow_new))


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
                         now: datetime, allow_new: bool) -> fanout.FanoutResult:  # fmt: skip
    """Every phase in one event loop over one connection pool: the take profits reuse the entries'
    connections. The store phases block the loop on purpose: nothing is in flight then."""
    pool = AiohttpPool(ctx.concurrency)
    try:
        return await _phases(ctx, strategy, execution_id, signal, now, allow_new, pool)
    finally:
        await pool.aclose()


async def _phases(ctx: LiveContext, strategy: StrategySettings, execution_id: int, signal: Signal,
                  now: datetime, allow_new: bool, pool: AiohttpPool) -> fanout.FanoutResult:  # fmt: skip
    market = _market(ctx, strategy.symbol)
    result = fanout.FanoutResult()
    plan_input = fanout.PlanInput(execution_id, strategy.id, signal, market, ctx.fee_rate, now, allow_new)
    clock = _Phases(result.timings)
    with clock("plan_ms"), session_scope(ctx.settings) as session:
        jobs = fanout.plan(session, plan_input, result)
        fanout.mark_sending(session, jobs)
    if jobs:
        with clock("send_ms"):
            await fanout.send_all(ctx.api_url, ctx.public_url, ctx.vault, jobs, ctx.concurrency, pool)
        with clock("record_ms"), session_scope(ctx.settings) as session:
            fanout.record(session, jobs, now, result)
    if market.kind == "spot" and result.resumed:  # a fresh run sent each take profit after its entry
        with clock("tp_plan_ms"), session_scope(ctx.settings) as session:
            tp_jobs = fanout.spot_take_profit_jobs(session, execution_id, market)
            fanout.mark_sending(session, tp_jobs)
        if tp_jobs:
            with clock("tp_send_ms"):
                await fanout.send_all(ctx.api_url, ctx.public_url, ctx.vault, tp_jobs, ctx.concurrency, pool)
            tp_result = fanout.FanoutResult()
            with clock("tp_record_ms"), session_scope(ctx.settings) as session:
                fanout.record(session, tp_jobs, now, tp_result)
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


def flatten(ctx: LiveContext, strategy: StrategySettings, now: datetime | None = None) -> ExecutionReport:
    """Close every open trade of a strategy at market now (an operator's EXIT), through the same
    intent-first fan-out, recorded as its own execution keyed `<time>_flatten`."""
    now = now or utcnow()
    key = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "_flatten"
    report = ExecutionReport(strategy.id, strategy.code, key, "COMPLETED", signal="EXIT")
    execution_id, _, state = _claim(ctx, strategy, key, now)
    report.execution_id = execution_id
    if state in ("ALREADY_DONE", "IN_PROGRESS"):
        report.status = state
        return report
    started = time.perf_counter()
    signal = Signal("EXIT", Decimal(0), None, None, 0)
    with session_scope(ctx.settings) as session:
        row = session.get(StrategyExecution, execution_id)
        row.signal, row.signal_price = signal.action, signal.price
    result = _fan_out(ctx, strategy, execution_id, signal, now, allow_new=True)
    report.outcomes, report.subscribers = result.outcomes, len(result.outcomes)
    _finish(ctx, execution_id, started, status="COMPLETED", subscribers_count=len(result.outcomes),
            details={"outcomes": {str(k): v for k, v in result.outcomes.items()}})  # fmt: skip
    return report
