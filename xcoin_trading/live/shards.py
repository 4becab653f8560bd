"""Sharded fan-out: one candle's subscribers split by account into `shards` parts, run as separate
processes (Dagster steps or runs, on one host or many).

- The strategy still runs once per (strategy, candle): every shard calls `execute(signal_only=True)`;
  the one that claims the execution row runs the strategy and records its signal on the row, the
  others (LOCKED / IN_PROGRESS) wait for the signal to appear there. A resumed execution reuses it.
  Each strategy has a preferred shard (`strategy id % N`) that starts its sandbox before the close and
  claims at once; the others wait `CLAIM_GRACE` for its signal before they try to claim, so the
  strategies' CPU is spread over the shards and no sandbox is started N times.
- Shard k of N fans the signal out to the subscriptions of the users with `user_id % N == k`. An
  account (broker keys) belongs to one user, so it is never split: its balance-bounded sizing stays
  in one process. Intents and client order ids are today's (keyed by execution, subscription, leg).
- Exactly once per shard: the `execution_shards` row (unique per execution and shard) is the shard's
  claim, as the execution row is the candle's; a re-run of a crashed shard takes the dead worker's
  row over and resolves its intents by client id before anything is sent again.
- The execution is COMPLETED by the shard that completes the last of its N rows, in one transaction
  that locks the execution row: its outcomes are the union of the shards'.

N = 1 never comes here: `run_candle_close` is the single-process path, unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from xcoin_trading.errors import ValidationError
from xcoin_trading.live import coordinator, fanout
from xcoin_trading.live.context import LiveContext
from xcoin_trading.live.coordinator import ExecutionReport
from xcoin_trading.live.locks import holder_is_dead
from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.live.runner import Signal
from xcoin_trading.store.db import rows_changed, session_scope
from xcoin_trading.store.lifecycle import FINISHED_EXECUTION
from xcoin_trading.store.models import ExecutionShard, StrategyExecution, Subscription, Trade
from xcoin_trading.timeframes import interval_key, utcnow

SIGNAL_POLL_SECONDS = 0.05
SIGNAL_GRACE = timedelta(seconds=10)  # beyond the sandbox's wall clock: the claimer died or hangs
CLAIM_GRACE = 1.0  # seconds a shard waits for the preferred shard's signal before claiming itself


def shard_of(user_id: int, shards: int) -> int:
    """The shard of a user's subscriptions (all of them: one account is never split)."""
    return user_id % shards


def parse_shard(field: str, value: str) -> tuple[int, int]:
    """ "K/N" -> (K, N), checked."""
    k, sep, n = value.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
        raise ValidationError(field, f"must be K/N with 0 <= K < N, e.g. 0/2, got {value!r}")
    return int(k), int(n)


def preferred_shard(strategy_id: int, shards: int) -> int:
    """The shard that runs the strategy (the others take over only if it does not claim in time)."""
    return strategy_id % shards


def prepare_shard(ctx: LiveContext, symbol: str, resolution: str, shard: int, shards: int) -> int:
    """`coordinator.prepare_candle` for one shard: its accounts' balances, its strategies' sandboxes."""
    return coordinator.prepare_candle(ctx, symbol, resolution, only=shard_filter(shard, shards),
                                      runs_here=lambda s: preferred_shard(s.id, shards) == shard)  # fmt: skip


def shard_filter(shard: int, shards: int) -> Any:
    """The same rule as `shard_of`, as a condition on Subscription for the fan-out's queries."""
    return (Subscription.user_id % shards) == shard


@dataclass
class ShardReport(ExecutionReport):
    shard: int = 0
    shards: int = 1
    # The execution's status after this shard: COMPLETED once every shard has finished.
    execution_status: str | None = None


def run_candle_shard(
    ctx: LiveContext,
    symbol: str,
    resolution: str,
    close_time: datetime,
    shard: int,
    shards: int,
    now: datetime | None = None,
) -> list[ShardReport]:
    """Shard `shard` of `shards` of one candle close: every strategy on the candle, this shard's
    subscribers only. Any shard may be the one that runs the strategy."""
    if shards < 1:
        raise ValidationError("shards", f"must be at least 1, got {shards}")
    if not 0 <= shard < shards:
        raise ValidationError("shard", f"must be between 0 and {shards - 1}, got {shard}")
    return coordinator.on_each_strategy(
        ctx, symbol, resolution, close_time, now,
        lambda s, at, step, deadline: _shard_of_execution(ctx, s, close_time, at, step, deadline, shard, shards),
        runs_here=lambda s: preferred_shard(s.id, shards) == shard,
    )  # fmt: skip


def _shard_of_execution(ctx: LiveContext, strategy: StrategySettings, close_time: datetime, now: datetime,
                        step: int, deadline: float, shard: int, shards: int) -> ShardReport:  # fmt: skip
    key = interval_key(close_time, strategy.resolution)
    found = None
    if preferred_shard(strategy.id, shards) != shard:  # the preferred shard runs it unless it is missing
        found = _await_signal(ctx, strategy.id, key, time.time() + CLAIM_GRACE)
    if found is not None:
        base = coordinator.ExecutionReport(strategy.id, strategy.code, key,
                                           "IN_PROGRESS")  # fmt: skip
    else:
        base = coordinator.execute(ctx, strategy, close_time, now, step, deadline=deadline, signal_only=True)
    report = ShardReport(**vars(base), shard=shard, shards=shards)
    if base.status in ("LOCKED", "IN_PROGRESS", "ALREADY_DONE"):
        # Another shard claimed the candle: wait for its signal (or its end) on the execution row.
        found = found or _await_signal(
            ctx, strategy.id, base.interval_key, deadline + SIGNAL_GRACE.total_seconds()
        )
        if found is None:
            report.status, report.error = "FAILED", "no signal was recorded for the candle in time"
            return report
        execution_id, status, signal = found
        report.execution_id = execution_id
        if signal is None:  # the execution ended without a fan-out (NO_SIGNAL, SKIPPED, FAILED)
            report.status = report.execution_status = status
            return report
        report.signal = signal.action
    elif base.status != "SIGNALLED":  # NO_SIGNAL / SKIPPED / FAILED: nothing to fan out
        report.execution_status = base.status
        return report
    else:
        execution_id = base.execution_id
        signal = coordinator.recorded_signal(ctx, execution_id) if execution_id is not None else None
        if execution_id is None or signal is None:  # execute records both before it reports SIGNALLED
            report.status, report.error = "FAILED", "the execution reported a signal it did not record"
            return report
    _fan_out_shard(ctx, strategy, report, execution_id, signal, close_time, now, step)
    return report


def _await_signal(
    ctx: LiveContext, strategy_id: int, key: str, until: float
) -> tuple[int, str, Signal | None] | None:
    """(execution id, its status, the recorded signal when it is to be fanned out); None on timeout."""
    while True:
        with session_scope(ctx.settings) as session:
            row = session.scalar(
                select(StrategyExecution).where(
                    StrategyExecution.strategy_id == strategy_id, StrategyExecution.interval_key == key
                )
            )
            if row is not None:
                action, price = row.signal, row.signal_price  # recorded together (coordinator.execute)
                if (
                    action not in (None, "HOLD")
                    and price is not None
                    and row.status in ("RUNNING", "COMPLETED")
                ):
                    signal = Signal(action, price, row.signal_stop_loss, row.signal_take_profit, 0)
                    return row.id, row.status, signal
                if row.status in FINISHED_EXECUTION:
                    return row.id, row.status, None
        if time.time() > until:
            return None
        time.sleep(SIGNAL_POLL_SECONDS)


def _fan_out_shard(ctx: LiveContext, strategy: StrategySettings, report: ShardReport, execution_id: int,
                   signal: Signal, close_time: datetime, now: datetime, step: int) -> None:  # fmt: skip
    shard, shards = report.shard, report.shards
    lock = f"{ctx.namespace}:{strategy.id}:{report.interval_key}:shard-{shard}-of-{shards}"
    if not ctx.locks.acquire(lock, ctx.worker_id, ttl_seconds=max(60, 10 * step // 1000)):
        report.status = "LOCKED"
        return
    row_id, state = _claim_shard(ctx, execution_id, shard, shards)
    if state in ("ALREADY_DONE", "IN_PROGRESS"):
        report.status = state
        return
    started = time.perf_counter()
    late = now - close_time > timedelta(milliseconds=step * ctx.staleness_fraction)
    only = shard_filter(shard, shards)
    try:
        result = fanout.fan_out(ctx, strategy, execution_id, signal, now, allow_new=not late, only=only)
        report.outcomes = result.outcomes
        report.execution_status, report.trades_created = _complete(ctx, execution_id, row_id, shards, result,
                                                                   started)  # fmt: skip
        report.status, report.subscribers = "COMPLETED", len(result.outcomes)
    except Exception as exc:  # a bug of ours, as in `execute`: the execution FAILS; the reconciler
        # resolves what this shard left in flight by client id. The other shards finish their own.
        report.status, report.error = "FAILED", f"{type(exc).__name__}: {exc}"
        error = f"shard {shard}/{shards}: {report.error}"[:2000]
        with session_scope(ctx.settings) as session:
            session.execute(
                update(ExecutionShard)
                .where(ExecutionShard.id == row_id)
                .values(status="FAILED", error=error, finished_at=utcnow(), updated_at=utcnow())
            )
            session.execute(
                update(StrategyExecution)
                .where(StrategyExecution.id == execution_id, StrategyExecution.status == "RUNNING")
                .values(status="FAILED", error=error, finished_at=utcnow(), updated_at=utcnow())
            )
        report.execution_status = "FAILED"
        coordinator.log.exception("shard %s/%s of execution %s failed", shard, shards, execution_id)


def _claim_shard(ctx: LiveContext, execution_id: int, shard: int, shards: int) -> tuple[int, str]:
    """(shard row id, NEW / RESUMED / ALREADY_DONE / IN_PROGRESS). Inserting the row is the claim."""
    with session_scope(ctx.settings) as session:
        other = session.scalar(
            select(ExecutionShard.shards).where(
                ExecutionShard.execution_id == execution_id, ExecutionShard.shards != shards
            )
        )
    if other is not None:
        raise ValidationError(
            "shards", f"execution {execution_id} is already split into {other} shards, not {shards}"
        )
    try:
        with session_scope(ctx.settings) as session:
            row = ExecutionShard(execution_id=execution_id, shard=shard, shards=shards, status="RUNNING",
                                 worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id, started_at=utcnow(),
                                 subscribers_count=0)  # fmt: skip
            session.add(row)
            session.flush()
            return row.id, "NEW"
    except IntegrityError:
        pass
    with session_scope(ctx.settings) as session:
        row = session.scalars(  # the insert above failed on (execution_id, shard): the row exists
            select(ExecutionShard).where(
                ExecutionShard.execution_id == execution_id, ExecutionShard.shard == shard
            )
        ).one()
        if row.status == "COMPLETED":
            return row.id, "ALREADY_DONE"
        if (
            row.status == "RUNNING"
            and row.worker_id != ctx.worker_id
            and not holder_is_dead(row.worker_id or "")
        ):
            return row.id, "IN_PROGRESS"
        taken = rows_changed(
            session,
            update(ExecutionShard)
            .where(ExecutionShard.id == row.id, ExecutionShard.status == row.status,
                   ExecutionShard.worker_id == row.worker_id)
            .values(status="RUNNING", worker_id=ctx.worker_id, dagster_run_id=ctx.dagster_run_id, error=None,
                    finished_at=None, updated_at=utcnow()),
        )  # fmt: skip
        return row.id, "RESUMED" if taken else "IN_PROGRESS"


def _complete(ctx: LiveContext, execution_id: int, row_id: int, shards: int, result: Any,
              started: float) -> tuple[str, int]:  # fmt: skip
    """Record the shard COMPLETED; the last one completes the execution. (execution status, trades of
    the execution so far). The execution row is locked first, so two last shards cannot both miss
    each other's rows."""
    failures = [k for k, v in result.outcomes.items() if v["status"] in ("FAILED", "UNKNOWN")]
    with session_scope(ctx.settings) as session:
        execution = session.get_one(StrategyExecution, execution_id, with_for_update=True)
        row = session.get_one(ExecutionShard, row_id)
        row.status, row.finished_at, row.subscribers_count = "COMPLETED", utcnow(), len(result.outcomes)
        row.details = {"outcomes": {str(k): v for k, v in result.outcomes.items()}, "timings": result.timings,
                       "duration_ms": int((time.perf_counter() - started) * 1000),
                       "balances_read_ahead": result.balances_read_ahead}  # fmt: skip
        row.error = f"{len(failures)} subscriber(s) failed" if failures else None
        session.flush()
        done = session.scalars(
            select(ExecutionShard).where(
                ExecutionShard.execution_id == execution_id,
                ExecutionShard.status == "COMPLETED",
                ExecutionShard.shards == shards,
            )
        ).all()
        trades = session.scalars(
            select(func.count()).select_from(Trade).where(Trade.execution_id == execution_id)
        ).one()
        if execution.status == "RUNNING" and len({r.shard for r in done}) == shards:
            outcomes: dict[str, Any] = {}
            for r in sorted(done, key=lambda r: r.shard):
                outcomes.update((r.details or {}).get("outcomes", {}))
            failed = sum(1 for v in outcomes.values() if v["status"] in ("FAILED", "UNKNOWN"))
            finished = utcnow()
            execution.status, execution.finished_at = "COMPLETED", finished
            execution.subscribers_count, execution.trades_created = len(outcomes), trades
            execution.duration_ms = int(
                (finished - (execution.started_at or finished)).total_seconds() * 1000
            )
            execution.error = f"{failed} subscriber(s) failed" if failed else None
            execution.details = {
                "outcomes": dict(sorted(outcomes.items(), key=lambda kv: int(kv[0]))),
                # The candle and strategy phases, as the shard that ran the strategy recorded them.
                "timings": {**(execution.details or {}).get("timings", {}),
                            **{f"shard_{r.shard}": (r.details or {}).get("timings", {}) for r in done}},
                "balances_read_ahead": sum((r.details or {}).get("balances_read_ahead", 0) for r in done),
                "shards": shards,
            }  # fmt: skip
        return execution.status, trades
