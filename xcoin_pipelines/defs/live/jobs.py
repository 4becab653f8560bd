"""`live_execution_job`: one run per candle close of one (symbol, resolution).

One op runs the coordinator in process: every strategy on the candle runs once and its signal fans
out to every subscriber inside the op (async, bounded), with the store as the source of truth.
Run config holds only the candle (no keys, no ids of secrets); keys are decrypted inside the op.
"""

import time
from collections.abc import Callable

import dagster as dg
from pydantic import Field

from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import parse_utc

LIVE_OP = "live_candle_close"


class CandleCloseConfig(dg.Config):
    symbol: str = Field(description="market, e.g. BTCUSDT (spot) or B-BTC_USDT (futures)")
    resolution: str = Field(description="candle resolution, e.g. 1m, 5m, 1h")
    close_time: str = Field(description="candle close time, UTC ISO, e.g. 2024-01-01T10:05:00Z")
    now: str | None = Field(
        default=None,
        description="pretend it is this time (replays and tests); default: the clock. "
        "The coordinator skips a candle started later than its staleness limit after the close.",
    )


def _summary_markdown(rows: list[dict]) -> str:
    lines = [
        "| strategy | interval | status | signal | subscribers | trades | duration ms | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        error = (r["error"] or "").replace("|", "/").replace("\n", " ")[:200]
        lines.append(
            f"| {r['strategy']} | {r['interval_key']} | {r['status']} | {r['signal'] or '-'} | "
            f"{r['subscribers']} | {r['trades_created']} | {r['duration_ms'] if r['duration_ms'] is not None else '-'} | {error} |"
        )
    return "\n".join(lines)


RECONCILE_FRESH_SECONDS = 120
OUTCOME_TAG = "xcoin/outcome"
STATUSES_TAG = "xcoin/statuses"
ERROR_SHOWN = 1000
# The run's one-word outcome: the most alarming status among its strategies' executions.
OUTCOME_ORDER = ("FAILED", "SKIPPED", "LOCKED", "IN_PROGRESS", "ALREADY_DONE", "COMPLETED", "NO_SIGNAL")


def run_outcome(statuses: dict[str, int]) -> str:
    if not statuses:
        return "NO_STRATEGY"
    return min(statuses, key=lambda s: OUTCOME_ORDER.index(s) if s in OUTCOME_ORDER else -1)


def _reconciled_recently(instance: dg.DagsterInstance) -> bool:
    """Did a `reconcile_job` run succeed in the last two minutes (the schedule runs every minute)?"""
    from datetime import UTC, datetime

    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name="reconcile_job", statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    if not records or records[0].end_time is None:
        return False
    return datetime.now(UTC).timestamp() - records[0].end_time < RECONCILE_FRESH_SECONDS


def _wait_for_close(context: dg.OpExecutionContext, close, ready: Callable[[], int]) -> None:
    """A run the sensor launched ahead of its candle (PRELAUNCH_MS) waits here, warm, for the close;
    `ready` starts the candle's strategy sandboxes first, so they load while it waits."""
    from datetime import UTC, datetime

    if (close - datetime.now(UTC)).total_seconds() > 0:
        warmed = ready()
        ahead = (close - datetime.now(UTC)).total_seconds()
        context.log.info(
            f"launched {ahead:.1f} s before the candle closes; {warmed} strategy sandbox(es) loading; "
            "waiting for the close"
        )
        time.sleep(max(0.0, ahead))


def _startup_reconcile(context, ctx) -> None:
    if _reconciled_recently(context.instance):
        return
    # Start-up after downtime (or the reconcile schedule is off): settle what happened while
    # nobody watched before placing anything new. Normal candles skip this and keep their latency.
    from xcoin_trading.alerts import reconcile_report
    from xcoin_trading.live.reconcile import reconcile_once

    report = reconcile_once(ctx, audit=True)
    reconcile_report(report)
    context.log.info(
        f"start-up reconcile: {report.accounts} accounts, {report.api_calls} calls, "
        f"{dict(report.transitions)} in {report.duration_ms} ms"
    )


def _rows(context, settings, reports) -> list[dict]:
    """One row per strategy (per shard in a sharded run); alerts and warnings sent on the way."""
    from collections import Counter

    import sqlalchemy as sa

    from xcoin_trading.alerts import execution_reports
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import StrategyExecution

    execution_reports(reports)  # FAILED/SKIPPED, failed orders, daily loss limits (XCOIN_ALERT_URLS)
    ids = [r.execution_id for r in reports if r.execution_id is not None]
    durations: dict[int, int | None] = {}
    if ids:
        with session_scope(settings) as session:
            durations = dict(
                session.execute(
                    sa.select(StrategyExecution.id, StrategyExecution.duration_ms).where(
                        StrategyExecution.id.in_(ids)
                    )
                ).all()
            )
    rows = []
    for r in reports:
        outcome_counts = Counter(o.get("status", "?") for o in r.outcomes.values())
        row = {
            "strategy": r.strategy_code,
            "strategy_id": r.strategy_id,
            "execution_id": r.execution_id,
            "interval_key": r.interval_key,
            "status": r.status,
            "signal": r.signal,
            "subscribers": r.subscribers,
            "trades_created": r.trades_created,
            "duration_ms": durations.get(r.execution_id) if r.execution_id else None,
            "subscriber_outcomes": dict(sorted(outcome_counts.items())),
            "error": r.error,
        }
        if hasattr(r, "shard"):
            row |= {"shard": f"{r.shard}/{r.shards}", "execution_status": r.execution_status}
        rows.append(row)
        if r.status == "FAILED":
            context.log.warning(f"strategy {r.strategy_code} {r.interval_key} FAILED: {r.error}")
    return rows


def _summary(context, rows: list[dict], elapsed_ms: int, what: str) -> dg.Output[list[dict]]:
    """The run's outcome tag (the most alarming status) and metadata over every row."""
    from collections import Counter

    if not rows:
        context.log.info(f"no active strategy trades {what}")
    statuses = Counter(r["status"] for r in rows)
    outcome = run_outcome(statuses)
    # The run itself succeeds (its work is recorded); the outcome says what the candle did.
    context.instance.add_run_tags(
        context.run_id,
        {OUTCOME_TAG: outcome, STATUSES_TAG: ",".join(f"{k}:{v}" for k, v in sorted(statuses.items()))},
    )
    line = (
        f"outcome: {outcome} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items())) or 'no strategy'})"
    )
    problems = [
        f"{r['strategy']} {r['status']}: {r['error']}" for r in rows if r["status"] in ("FAILED", "SKIPPED")
    ]
    if problems:
        context.log.warning(line + " — " + "; ".join(problems)[:ERROR_SHOWN])
    else:
        context.log.info(line)
    return dg.Output(
        rows,
        metadata={
            "outcome": outcome,
            "strategies": dg.MetadataValue.md(_summary_markdown(rows)) if rows else "none",
            "executions": dg.MetadataValue.json(rows),
            "statuses": dg.MetadataValue.json(dict(sorted(statuses.items()))),
            "subscribers": sum(r["subscribers"] for r in rows),
            "trades_created": sum(r["trades_created"] for r in rows),
            "failed_strategies": statuses.get("FAILED", 0),
            "duration_ms": elapsed_ms,
        },
    )


@dg.op(name=LIVE_OP, tags={"xcoin/kind": "live"})
def live_candle_close(
    context: dg.OpExecutionContext, config: CandleCloseConfig, xcoin: XcoinSettingsResource
) -> dg.Output[list[dict]]:
    """Run every strategy on the candle once and fan its signal out; one row per strategy."""
    from xcoin_trading.live.coordinator import live_context, prepare_candle, run_candle_close

    close = parse_utc(config.close_time, "close_time")
    now = parse_utc(config.now, "now")
    settings = xcoin.get()
    ctx = live_context(settings, dagster_run_id=context.run_id)
    _startup_reconcile(context, ctx)
    if now is None:
        _wait_for_close(context, close, lambda: prepare_candle(ctx, config.symbol, config.resolution))
    started = time.perf_counter()
    reports = run_candle_close(ctx, config.symbol, config.resolution, close, now=now)
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    rows = _rows(context, settings, reports)
    return _summary(context, rows, elapsed_ms, f"{config.symbol} {config.resolution}")


def _single_process_job() -> dg.JobDefinition:
    @dg.job(
        name="live_execution_job",
        executor_def=dg.in_process_executor,
        tags={"xcoin/kind": "live"},
        description="One candle close of one (symbol, resolution): every strategy once, fanned out to subscribers.",
    )
    def live_execution_job() -> None:
        live_candle_close()

    return live_execution_job


SHARD_OP = "live_candle_shard"


def _sharded_job(shards: int) -> dg.JobDefinition:
    """The candle's fan-out in `shards` steps, each its own process (xcoin_trading/live/shards.py).

    The first op (same name and config as the single-process job's, so the sensors and run config
    are unchanged) only hands the candle to the shards and returns at once: in a prelaunched run the
    shard processes start before the close and wait for it warm, like the single op does."""

    @dg.op(name=LIVE_OP, tags={"xcoin/kind": "live"}, out=dg.DynamicOut(dict))
    def live_candle_shards(
        context: dg.OpExecutionContext, config: CandleCloseConfig, xcoin: XcoinSettingsResource
    ):
        """Hand the candle to each shard (and settle a start-up after downtime first)."""
        from xcoin_trading.live.coordinator import live_context

        parse_utc(config.close_time, "close_time")
        if config.now:
            parse_utc(config.now, "now")
        _startup_reconcile(context, live_context(xcoin.get(), dagster_run_id=context.run_id))
        for k in range(shards):
            yield dg.DynamicOutput(
                {**config.model_dump(), "shard": k, "shards": shards}, mapping_key=f"shard_{k}"
            )

    @dg.op(name=SHARD_OP, tags={"xcoin/kind": "live"})
    def live_candle_shard(
        context: dg.OpExecutionContext, candle: dict, xcoin: XcoinSettingsResource
    ) -> list[dict]:
        """Shard k of N: every strategy on the candle, the subscribers of users with user_id % N == k."""
        from xcoin_trading.live.coordinator import live_context
        from xcoin_trading.live.shards import prepare_shard, run_candle_shard

        close = parse_utc(candle["close_time"], "close_time")
        now = parse_utc(candle.get("now"), "now")
        settings = xcoin.get()
        ctx = live_context(settings, dagster_run_id=context.run_id)
        symbol, resolution, shard, shards = (
            candle["symbol"],
            candle["resolution"],
            candle["shard"],
            candle["shards"],
        )
        if now is None:  # the shard's accounts' balances, and the sandboxes of the strategies it prefers
            _wait_for_close(context, close, lambda: prepare_shard(ctx, symbol, resolution, shard, shards))
        reports = run_candle_shard(
            ctx, candle["symbol"], candle["resolution"], close, candle["shard"], candle["shards"], now=now
        )
        rows = _rows(context, settings, reports)
        stuck = [r for r in reports if r.status == "FAILED" and r.execution_status is None]
        if stuck:  # nothing recorded it (no signal in time): the run fails, its failure sensor takes over
            raise dg.Failure(
                description="; ".join(f"{r.strategy_code}: {r.error}" for r in stuck)[:ERROR_SHOWN]
            )
        return rows

    @dg.op(name="live_candle_summary", tags={"xcoin/kind": "live"})
    def live_candle_summary(
        context: dg.OpExecutionContext, shard_rows: list[list[dict]]
    ) -> dg.Output[list[dict]]:
        """The run's outcome over every shard (a candle is as alarming as its worst shard)."""
        rows = [r for part in shard_rows for r in part]
        return _summary(context, rows, 0, "this candle")

    @dg.job(
        name="live_execution_job",
        executor_def=shard_executor(shards),
        tags={"xcoin/kind": "live", "xcoin/fanout_shards": str(shards)},
        description=f"One candle close of one (symbol, resolution): every strategy once, its fan-out in "
        f"{shards} shards by account, each shard its own step.",
    )
    def live_execution_job() -> None:
        live_candle_summary(live_candle_shards().map(live_candle_shard).collect())

    return live_execution_job


def shard_executor(shards: int) -> dg.ExecutorDefinition:
    """Multiprocess on one host (every shard at once); XCOIN_LIVE_EXECUTOR=docker|k8s|celery puts each
    shard step on another host through the integration's step executor (docs/scaling.md)."""
    import importlib
    import os

    kind = os.environ.get("XCOIN_LIVE_EXECUTOR") or "multiprocess"
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"max_concurrent": shards + 1}, name="live_shards_executor"
        )
    known = {"docker": ("dagster_docker", "docker_executor"), "k8s": ("dagster_k8s", "k8s_job_executor"),
             "celery": ("dagster_celery", "celery_executor")}  # fmt: skip
    if kind not in known:
        raise ValueError(f"XCOIN_LIVE_EXECUTOR must be one of multiprocess, {', '.join(known)}; got {kind!r}")
    module, name = known[kind]
    return getattr(importlib.import_module(module), name)


def build_live_job(shards: int | None = None) -> dg.JobDefinition:
    """XCOIN_FANOUT_SHARDS = 1 (default): today's one op in process (the lightest path: latency);
    N > 1: the sharded job."""
    if shards is None:
        from xcoin_trading.config import _positive_int

        shards = _positive_int("XCOIN_FANOUT_SHARDS", 1)
    return _single_process_job() if shards <= 1 else _sharded_job(shards)


live_execution_job = build_live_job()


def candle_run_config(symbol: str, resolution: str, close_time: str, now: str | None = None) -> dict:
    """Run config for one candle (what the sensor emits and what a hand launch needs)."""
    cfg: dict = {"symbol": symbol, "resolution": resolution, "close_time": close_time}
    if now is not None:
        cfg["now"] = now
    return {"ops": {LIVE_OP: {"config": cfg}}}
