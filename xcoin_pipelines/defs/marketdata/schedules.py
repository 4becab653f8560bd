"""Nightly close of yesterday for every active symbol, and a top-up of today for live symbols.

"Which symbols" is a seam: each schedule takes a callable (context → symbols). The default is the
symbols registered as dynamic partitions; the live layer swaps in "symbols with live subscribers"
from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

import dagster as dg

from xcoin_pipelines.defs.marketdata.assets import CANDLE_ASSETS
from xcoin_pipelines.defs.marketdata.partitions import (
    CANDLE_PARTITIONS,
    candle_partition_key,
    registered_symbols,
)

ActiveSymbols = Callable[[dg.ScheduleEvaluationContext], Sequence[str]]
# Resolutions whose candles close during the day; a 1d candle only closes at midnight.
TOPUP_RESOLUTIONS = ("1m", "5m", "15m", "1h", "4h")


def registered(context: dg.ScheduleEvaluationContext) -> list[str]:
    return registered_symbols(context.instance)


def with_live_subscribers(context: dg.ScheduleEvaluationContext) -> list[str]:
    """Registered symbols that some active, unpaused subscription trades (read from the store)."""
    from xcoin_trading.marketdata.symbols import live_subscriber_symbols

    known = set(registered_symbols(context.instance))
    return [s for s in live_subscriber_symbols() if s in known]


candles_job = dg.define_asset_job(
    "market_data_candles_job",
    selection=dg.AssetSelection.assets(*CANDLE_ASSETS.values()),
    partitions_def=CANDLE_PARTITIONS,
    executor_def=dg.in_process_executor,
    tags={"xcoin/kind": "market_data"},
    description="All resolutions of one symbol × day (used by the nightly schedule and UI backfills).",
)
topup_job = dg.define_asset_job(
    "market_data_topup_job",
    selection=dg.AssetSelection.assets(*(CANDLE_ASSETS[r] for r in TOPUP_RESOLUTIONS)),
    partitions_def=CANDLE_PARTITIONS,
    executor_def=dg.in_process_executor,
    tags={"xcoin/kind": "market_data"},
    description="Today's closed candles so far (partial day) for symbols with live subscribers.",
)


def _one_run_per_symbol(
    symbols: Iterable[str], day: str, run_key: str, none_reason: str
) -> dg.SkipReason | list[dg.RunRequest]:
    """One run per symbol for the day's partition; the run key makes a re-evaluated tick a no-op."""
    if not (ordered := sorted(set(symbols))):
        return dg.SkipReason(none_reason)
    return [
        dg.RunRequest(
            run_key=f"{run_key}|{s}", partition_key=candle_partition_key(day, s), tags={"xcoin/day": day}
        )
        for s in ordered
    ]


def build_daily_close_schedule(
    active_symbols: ActiveSymbols = registered,
    *,
    minute: int = 5,
    name: str = "market_data_daily_close_schedule",
) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, job=candles_job, cron_schedule=f"{minute} 0 * * *", execution_timezone="UTC")
    def _schedule(context: dg.ScheduleEvaluationContext):
        day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
        return _one_run_per_symbol(
            active_symbols(context), day, f"close|{day}", "no active symbols: register one with add_symbols()"
        )

    return _schedule


def build_topup_schedule(
    live_symbols: ActiveSymbols = registered,
    *,
    every_minutes: int = 5,
    name: str = "market_data_topup_schedule",
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name, job=topup_job, cron_schedule=f"*/{every_minutes} * * * *", execution_timezone="UTC"
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        at = context.scheduled_execution_time
        return _one_run_per_symbol(
            live_symbols(context),
            at.strftime("%Y-%m-%d"),
            f"topup|{at.isoformat()}",
            "no symbols with live subscribers",
        )

    return _schedule


market_data_daily_close_schedule = build_daily_close_schedule()
market_data_topup_schedule = build_topup_schedule(with_live_subscribers)
