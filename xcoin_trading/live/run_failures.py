"""Closing a failed live run's executions (the Dagster run-failure sensor calls this).

A run that failed leaves its executions RUNNING when its worker was killed or lost the database.
Each one whose worker is not provably alive is closed: FAILED with the run's error when no order is
in flight; kept RUNNING for one resume run when intents are unresolved (the resume takes the rows
over and resolves them by client order id); FAILED with the orders left to the reconciler when the
run was itself a resume.

A sharded execution (live/shards.py) is also resumed once when a shard of it never completed, even
with nothing in flight: the other shards' subscribers got the signal, so the dead shard's are served
by the resume (new entries only while the candle is fresh). When it is closed FAILED instead, its
unfinished shard rows are closed with it, so no shard is left RUNNING under a dead worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from xcoin_trading.config import Settings
from xcoin_trading.live.fanout import UNRESOLVED
from xcoin_trading.live.locks import WorkerState, worker_state
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import ExecutionShard, Order, StrategyExecution
from xcoin_trading.timeframes import utcnow

ERROR_LIMIT = 2000


@dataclass
class RunFailure:
    failed: list[int] = field(default_factory=list)  # executions marked FAILED
    resumable: list[int] = field(default_factory=list)  # left RUNNING for a resume run


def _leave_alone(worker_id: str | None) -> bool:
    """Its worker may still be working: alive here, or an id no worker writes. A worker on another
    host counts as gone: its run failed, and the run is the only owner of these rows."""
    return worker_state(worker_id) in (WorkerState.ALIVE, WorkerState.UNKNOWN)


def record_run_failure(settings: Settings, run_id: str, message: str, may_resume: bool) -> RunFailure:
    outcome = RunFailure()
    with session_scope(settings) as session:
        rows = session.scalars(
            sa.select(StrategyExecution).where(
                StrategyExecution.dagster_run_id == run_id, StrategyExecution.status == "RUNNING"
            )
        ).all()
        for row in rows:
            if _leave_alone(row.worker_id):
                continue
            in_flight = session.scalar(
                sa.select(sa.func.count())
                .select_from(Order)
                .where(Order.execution_id == row.id, Order.status.in_(UNRESOLVED))
            )
            note = f"Dagster run {run_id} failed: {message}"
            shards = session.scalars(
                sa.select(ExecutionShard).where(ExecutionShard.execution_id == row.id)
            ).all()
            expected = max((r.shards for r in shards), default=0)
            unfinished = expected - sum(1 for r in shards if r.status == "COMPLETED")
            if may_resume and (in_flight or unfinished):
                why = (
                    f"{in_flight} order(s) in flight"
                    if in_flight
                    else f"{unfinished} of {expected} shard(s) unfinished"
                )
                row.error = (note + f" ({why}: resuming)")[:ERROR_LIMIT]
                outcome.resumable.append(row.id)
                continue
            if in_flight:
                note += f" ({in_flight} order(s) left for the reconciler)"
            row.status, row.error, row.finished_at = "FAILED", note[:ERROR_LIMIT], utcnow()
            for shard in shards:
                if shard.status != "COMPLETED" and not _leave_alone(shard.worker_id):
                    shard.status, shard.error, shard.finished_at = "FAILED", note[:ERROR_LIMIT], utcnow()
            outcome.failed.append(row.id)
    return outcome


def claimed_any(settings: Settings, run_id: str) -> bool:
    """Whether the run recorded any execution (a run that died before claiming its candle did not)."""
    with session_scope(settings) as session:
        return bool(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(StrategyExecution)
                .where(StrategyExecution.dagster_run_id == run_id)
            )
        )
