"""Candles whose execution FAILED for a transient cause (exchange unreachable, candle not yet
published) and are still fresh: the candle sensor launches them once more (the coordinator's claim
takes the FAILED row back; see `coordinator.claim_execution`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcoin_trading.store.models import Strategy, StrategyExecution
from xcoin_trading.timeframes import resolution_ms, to_ms

LONGEST_WINDOW = timedelta(days=1)  # no resolution's staleness window is longer


def may_retry(
    details: dict | None, resolution: str, close: datetime, now: datetime, staleness_fraction: float
) -> bool:
    """The failure was transient and the candle is still within its staleness window."""
    window = timedelta(milliseconds=resolution_ms(resolution) * staleness_fraction)
    return bool((details or {}).get("retryable")) and now - close <= window


@dataclass(frozen=True)
class RetryableCandle:
    candle_key: str  # symbol:resolution
    close_ms: int
    failed_at_ms: int  # tells one failure of a candle from the next (one retry per failure)


def retryable_candles(
    session: Session, now: datetime, staleness_fraction: float = 1 / 3
) -> list[RetryableCandle]:
    rows = session.execute(
        select(StrategyExecution, Strategy.symbol, Strategy.resolution)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .where(StrategyExecution.status == "FAILED", StrategyExecution.scheduled_at >= now - LONGEST_WINDOW)
    ).all()
    found: dict[tuple[str, int], RetryableCandle] = {}
    for row, symbol, resolution in rows:
        if not may_retry(row.details, resolution, row.scheduled_at, now, staleness_fraction):
            continue
        key = (f"{symbol}:{resolution}", to_ms(row.scheduled_at))
        failed_at = to_ms(row.finished_at or row.updated_at)
        if key not in found or found[key].failed_at_ms < failed_at:
            found[key] = RetryableCandle(key[0], key[1], failed_at)
    return sorted(found.values(), key=lambda c: (c.candle_key, c.close_ms))
