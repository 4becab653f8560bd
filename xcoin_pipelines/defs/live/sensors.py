"""Trigger `live_execution_job` at every candle close, and record failed runs on their executions.

`candle_close_sensor` (every 5 s: a candle waits 2.5 s on average for it, and a 1m candle's run is
skipped 20 s after its close): for each active candle key (`symbol:resolution`) of the
registry, one run per candle that closed since the key's cursor. On a key's first evaluation only
the latest closed candle runs (no catch-up storm after a deploy or a new strategy), and not even
that one if it is already past the coordinator's staleness limit (it would only be SKIPPED); after a pause
at most `MAX_CATCH_UP` candles run, the newest ones: older candles would be skipped by the
coordinator's staleness rule anyway. The run key `f"{candle_key}|{interval_key}"` makes a candle
launch at most once per sensor even if the cursor write is lost (cursor writes follow submission).
A candle whose execution FAILED for a transient cause (exchange unreachable, candle not yet
published) is launched once more per failure while it is fresh (`|retry-<failed at ms>`).

Two runs of the same candle key must never overlap. The sensor holds a key back while one of its
runs is queued or in progress (its cursor does not move, so the candle is emitted on a later tick),
and the run queue enforces it on the instance with one slot per `xcoin/live_lane` value — put this
in `$DAGSTER_HOME/dagster.yaml` (full example: `dagster.example.yaml` beside this file):

    run_queue:
      dequeue_interval_seconds: 1
      tag_concurrency_limits:
        - key: xcoin/live_lane
          value: {applyLimitPerUniqueValue: true}
          limit: 1

(Equivalent under `concurrency.runs.tag_concurrency_limits`; Dagster refuses both at once.)
The database row per (strategy, candle) stays the exactly-once guarantee; these only save work.

`live_run_failure_sensor`: when a live run fails, its executions still RUNNING (the worker was
killed or lost the database before it could finish) are closed: with no order in flight they
become FAILED with the Dagster error; with unresolved intents the candle is run once more
(`xcoin/resume_of`), which takes the dead worker's rows over and resolves them by client order
id. A resume run that fails too marks them FAILED; the reconciler resolves what is left.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from xcoin_pipelines.defs.live.jobs import candle_run_config, live_execution_job
from xcoin_pipelines.resources import XcoinSettingsResource

# A run is launched this long before its candle closes and waits for the close inside its op, so the
# sensor's 5 s loop, the queue's dequeue and the run's process start (spawn + imports: 2-3 s on an idle
# host, 6+ s on a loaded one; measured by benchmarks/candle_latency.py) are spent before the close, not
# after it. XCOIN_LIVE_PRELAUNCH_MS=0 requests runs after the close only.
PRELAUNCH_MS = 20_000


def _prelaunch_ms() -> int:
    import os

    return int(os.environ.get("XCOIN_LIVE_PRELAUNCH_MS") or PRELAUNCH_MS)


MAX_CATCH_UP = 3  # candles per key per evaluation after a pause; older ones are stale anyway
LANE_TAG = "xcoin/live_lane"
CANDLE_TAG = "xcoin/candle_key"
INTERVAL_TAG = "xcoin/interval_key"
RESUME_TAG = "xcoin/resume_of"
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def due_closes(
    candle_keys: set[str], cursor: dict[str, int], now_ms: int, lead_ms: int = 0
) -> dict[str, list[int]]:
    """Close times (epoch ms) to run per candle key: since its cursor, bounded; the latest if new.
    A close at most `lead_ms` ahead counts as due: its run starts early and waits for the close."""
    from xcoin_trading.timeframes import floor_ms, resolution_ms

    due: dict[str, list[int]] = {}
    for key in sorted(candle_keys):
        _, resolution = key.rsplit(":", 1)
        step = resolution_ms(resolution)
        latest = floor_ms(now_ms + lead_ms, resolution)  # the close of the last candle closed (or closing)
        last = cursor.get(key)
        if last is None:
            due[key] = [latest]
        elif latest > last:
            first = max(last + step, latest - (MAX_CATCH_UP - 1) * step)
            due[key] = list(range(first, latest + step, step))
    return due


def stale_ms(candle_key: str, close_ms: int, now_ms: int) -> int:
    """The coordinator's staleness limit (ms) if the candle is already past it at `now_ms`, else 0."""
    from dataclasses import fields

    from xcoin_trading.live.context import LiveContext
    from xcoin_trading.timeframes import resolution_ms

    fraction = next(f.default for f in fields(LiveContext) if f.name == "staleness_fraction")
    limit = int(resolution_ms(candle_key.rsplit(":", 1)[1]) * fraction)
    return limit if now_ms - close_ms > limit else 0


def _in_flight_keys(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=live_execution_job.name, statuses=list(IN_FLIGHT)), limit=500
    )
    return {r.tags[CANDLE_TAG] for r in runs if CANDLE_TAG in r.tags}


def candle_run_request(candle_key: str, close_ms: int, run_key_suffix: str = "") -> dg.RunRequest:
    from xcoin_trading.timeframes import from_ms, interval_key

    symbol, resolution = candle_key.rsplit(":", 1)
    close = from_ms(close_ms)
    ikey = interval_key(close, resolution)
    return dg.RunRequest(
        run_key=f"{candle_key}|{ikey}{run_key_suffix}",
        run_config=candle_run_config(symbol, resolution, close.strftime("%Y-%m-%dT%H:%M:%SZ")),
        tags={CANDLE_TAG: candle_key, INTERVAL_TAG: ikey, LANE_TAG: candle_key},
    )


@dg.sensor(
    name="candle_close_sensor",
    job=live_execution_job,
    minimum_interval_seconds=5,
    description="One live_execution_job run per closed candle of every active candle key.",
)
def candle_close_sensor(context: dg.SensorEvaluationContext, xcoin: XcoinSettingsResource):
    from xcoin_trading.live.registry import registry_for
    from xcoin_trading.live.retries import retryable_candles
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.timeframes import from_ms

    settings = xcoin.get()
    now_ms = _now_ms()
    with session_scope(settings) as session:
        keys = registry_for(settings).active_candle_keys(session)
        retryable = retryable_candles(session, from_ms(now_ms))  # failed for a transient cause, still fresh
    cursor = {k: int(v) for k, v in json.loads(context.cursor or "{}").items() if k in keys}
    due = due_closes(keys, cursor, now_ms, _prelaunch_ms())
    busy = _in_flight_keys(context.instance) if due or retryable else set()
    requests, stale = [], []
    for key, closes in due.items():
        if key in busy:
            context.log.info(f"{key}: a run is still queued or in progress; its next candle waits")
            continue
        if key not in cursor and stale_ms(key, closes[-1], now_ms):
            # First look at this key (deploy, new strategy, sensor turned on) too late in the candle:
            # the run would only record SKIPPED. Start from the next close instead.
            cursor[key] = closes[-1]
            stale.append(key)
            context.log.info(
                f"{key}: its latest close is {(now_ms - closes[-1]) / 1000:.0f} s old, past the "
                f"{stale_ms(key, closes[-1], now_ms) / 1000:.0f} s staleness limit; starting at the next close"
            )
            continue
        requests.extend(candle_run_request(key, close) for close in closes)
        cursor[key] = closes[-1]
    for retry in retryable if keys else []:
        if retry.candle_key in busy or retry.candle_key not in keys:
            continue
        requests.append(candle_run_request(retry.candle_key, retry.close_ms, f"|retry-{retry.failed_at_ms}"))
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not requests:
        reason = "no active candle keys" if not keys else "no candle closed since the last evaluation"
        if due:
            reason = "every due candle key still has a run in flight"
        if stale:
            reason = f"latest close already stale on first look for {', '.join(stale)}; next close runs"
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    """The user-facing cause (e.g. the op's exception), not Dagster's wrapper around it."""
    causes = []
    for event in context.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            causes.append(f"{event.step_key}: {error.message.strip()}")
    return "; ".join(causes) or (context.failure_event.message or "run failed")


@dg.run_failure_sensor(
    name="live_run_failure_sensor",
    monitored_jobs=[live_execution_job],
    request_job=live_execution_job,
    minimum_interval_seconds=15,
    description="Marks a failed live run's unfinished executions FAILED, or resumes them once.",
)
def live_run_failure_sensor(context: dg.RunFailureSensorContext, xcoin: XcoinSettingsResource):
    run = context.dagster_run
    message = _failure_message(context)
    may_resume = RESUME_TAG not in run.tags
    settings = xcoin.get()
    from xcoin_trading.live.run_failures import claimed_any, record_run_failure

    outcome = record_run_failure(settings, run.run_id, message, may_resume)
    failed, resumable = outcome.failed, outcome.resumable
    if failed:
        context.log.info(f"run {run.run_id}: executions {failed} marked FAILED")
    if resumable:
        context.log.info(
            f"run {run.run_id}: executions {resumable} have orders in flight; resuming the candle"
        )
    elif may_resume and not claimed_any(settings, run.run_id):
        # The worker died before it claimed a strategy: the candle is run once more (the coordinator
        # records it SKIPPED if it is stale by then), never silently lost.
        context.log.info(f"run {run.run_id} died before claiming its candle; running the candle once more")
    else:
        return None
    tags = {k: v for k, v in run.tags.items() if k in (CANDLE_TAG, INTERVAL_TAG, LANE_TAG)}
    return dg.RunRequest(
        run_key=f"{tags.get(CANDLE_TAG, '')}|{tags.get(INTERVAL_TAG, '')}|resume-{run.run_id}",
        run_config=run.run_config,
        tags={**tags, RESUME_TAG: run.run_id},
    )
