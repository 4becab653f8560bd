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


@dg.op(name=LIVE_OP, tags={"xcoin/kind": "live"})
def live_candle_close(
    context: dg.OpExecutionContext, config: CandleCloseConfig, xcoin: XcoinSettingsResource
) -> dg.Output[list[dict]]:
    """Run every strategy on the candle once and fan its signal out; one row per strategy."""
    from collections import Counter

    import sqlalchemy as sa

    from xcoin_trading.live.coordinator import live_context, prepare_candle, run_candle_close
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import StrategyExecution
    from xcoin_trading.timeframes import parse_utc

    close = parse_utc(config.close_time, "close_time")
    now = parse_utc(config.now, "now")
    settings = xcoin.get()
    ctx = live_context(settings, dagster_run_id=context.run_id)
    if not _reconciled_recently(context.instance):
        # Start-up after downtime (or the reconcile schedule is off): settle what happened while
        # nobody watched before placing anything new. Normal candles skip this and keep their latency.
        from xcoin_trading.live.reconcile import reconcile_once

        report = reconcile_once(ctx, audit=True)
        from xcoin_trading.alerts import reconcile_report

        reconcile_report(report)
        context.log.info(
            f"start-up reconcile: {report.accounts} accounts, {report.api_calls} calls, "
            f"{dict(report.transitions)} in {report.duration_ms} ms"
        )
    if now is None:
        _wait_for_close(context, close, lambda: prepare_candle(ctx, config.symbol, config.resolution))
    started = time.perf_counter()
    reports = run_candle_close(
        ctx,
        config.symbol,
        config.resolution,
        close,
        now=now,
    )
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    from xcoin_trading.alerts import execution_reports, reconcile_report

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
        rows.append(
            {
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
        )
        if r.status == "FAILED":
            context.log.warning(f"strategy {r.strategy_code} {r.interval_key} FAILED: {r.error}")
    if not reports:
        context.log.info(f"no active strategy trades {config.symbol} {config.resolution}")
    statuses = Counter(r.status for r in reports)
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
        f"{r.strategy_code} {r.status}: {r.error}" for r in reports if r.status in ("FAILED", "SKIPPED")
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
            "subscribers": sum(r.subscribers for r in reports),
            "trades_created": sum(r.trades_created for r in reports),
            "failed_strategies": statuses.get("FAILED", 0),
            "duration_ms": elapsed_ms,
        },
    )


@dg.job(
    name="live_execution_job",
    executor_def=dg.in_process_executor,
    tags={"xcoin/kind": "live"},
    description="One candle close of one (symbol, resolution): every strategy once, fanned out to subscribers.",
)
def live_execution_job() -> None:
    live_candle_close()


def candle_run_config(symbol: str, resolution: str, close_time: str, now: str | None = None) -> dict:
    """Run config for one candle (what the sensor emits and what a hand launch needs)."""
    cfg: dict = {"symbol": symbol, "resolution": resolution, "close_time": close_time}
    if now is not None:
        cfg["now"] = now
    return {"ops": {LIVE_OP: {"config": cfg}}}
