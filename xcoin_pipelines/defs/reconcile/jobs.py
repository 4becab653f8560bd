"""`reconcile_job`: one reconciler pass (every minute by schedule); the same code `xcoin reconcile`
runs, and that live runs can call at start-up. In-process executor: one op, no step spawn cost."""

import dagster as dg
from pydantic import Field

from xcoin_pipelines.resources import XcoinSettingsResource


class ReconcileConfig(dg.Config):
    audit: bool = Field(default=False, description="also look for orders xcoin never placed (EXTERNAL)")


@dg.op(tags={"xcoin/kind": "reconcile"})
def reconcile_pass(
    context: dg.OpExecutionContext, config: ReconcileConfig, xcoin: XcoinSettingsResource
) -> None:
    from xcoin_trading.live.coordinator import live_context
    from xcoin_trading.live.reconcile import reconcile_once

    report = reconcile_once(live_context(xcoin.get()), audit=config.audit)
    from xcoin_trading.alerts import reconcile_report

    reconcile_report(report)  # LOST orders, unexplained flat positions, EXTERNAL orders (XCOIN_ALERT_URLS)
    context.log_event(
        dg.AssetObservation(
            asset_key="reconciler",
            metadata={
                "accounts": report.accounts,
                "api_calls": report.api_calls,
                "unreachable_accounts": report.failed_accounts,
                "duration_ms": report.duration_ms,
                **{f"transitions/{k}": v for k, v in sorted(report.transitions.items())},
            },
        )
    )
    if report.failed_accounts:
        context.log.warning(f"{report.failed_accounts} accounts could not be asked; retried next pass")


@dg.job(executor_def=dg.in_process_executor, tags={"xcoin/kind": "reconcile"})
def reconcile_job() -> None:
    reconcile_pass()


@dg.schedule(job=reconcile_job, cron_schedule="* * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)  # fmt: skip
def reconcile_every_minute(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%MZ")
    # A full audit for EXTERNAL orders once an hour; the other passes only follow our own orders.
    audit = context.scheduled_execution_time.minute == 0
    return dg.RunRequest(run_key=f"reconcile|{stamp}", run_config={"ops": {"reconcile_pass": {"config": {"audit": audit}}}},
                         tags={"xcoin/reconcile": stamp})  # fmt: skip
