"""Backfill a range of days from the exchange with as few requests as the 1000-candle cap allows.

Fetching day by day costs ceil(1440 / 1000) = 2 requests per 1m day; fetching whole days in
chunks of up to `PAGES_PER_CHUNK` pages costs at most one page more than the ideal per chunk (a
year of 1m candles: 528 requests instead of 732). Each day is still checked and written on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from xcoin_trading.candles import to_candle_frame
from xcoin_trading.config import Settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.marketdata.candles import check_resolution, check_symbol
from xcoin_trading.marketdata.fetch import (
    CANDLES_PER_REQUEST,
    CandleSource,
    DayIngest,
    DayWindow,
    client_source,
    day_window,
    store_checked_day,
)
from xcoin_trading.timeframes import DAY_MS, resolution_ms, to_ms, utcnow

PAGES_PER_CHUNK = 50


@dataclass
class BackfillReport:
    days: list[DayIngest] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0

    @property
    def written(self) -> list[DayIngest]:
        return [d for d in self.days if d.written]

    @property
    def failed(self) -> list[DayIngest]:
        return [d for d in self.days if not d.written]

    @property
    def rows_written(self) -> int:
        return sum(d.report.rows for d in self.written)

    def summary_line(self) -> str:
        partial = sum(1 for d in self.written if d.window.partial)
        kinds = sorted({d.kind for d in self.days})
        synthetic = " (SIMULATOR: synthetic candles, not market history)" if "simulator" in kinds else ""
        return (
            f"backfilled {len(self.written)} day(s) ({partial} partial), {self.rows_written:,} candles, "
            f"{len(self.failed)} day(s) failed checks, {self.requests} exchange request(s), {self.seconds:.1f}s, "
            f"source {'+'.join(kinds) or 'none'}{synthetic}"
        )

    def describe_failures(self) -> str:
        return "\n".join(
            f"{d.symbol} {d.resolution} {d.window.day}: nothing written\n"
            + "\n".join("  " + line for line in d.report.describe().splitlines())
            for d in self.failed
        )


def _chunks(windows: list[DayWindow], resolution: str) -> list[list[DayWindow]]:
    per_page = CANDLES_PER_REQUEST * resolution_ms(resolution)
    days_per_chunk = max(1, (PAGES_PER_CHUNK * per_page) // DAY_MS)
    chunks: list[list[DayWindow]] = []
    for w in windows:
        if chunks and len(chunks[-1]) < days_per_chunk and chunks[-1][-1].end_ms == w.start_ms:
            chunks[-1].append(w)
        else:
            chunks.append([w])
    return chunks


def backfill(
    client: CandleSource,
    symbols: Sequence[str],
    resolutions: Sequence[str],
    days: Sequence[str],
    *,
    settings: Settings | None = None,
    now_ms: int | None = None,
    progress: Callable[[int, int, DayIngest], None] | None = None,
) -> BackfillReport:
    """Fetch, check and store every symbol × resolution × day; a failing day never stops the rest."""
    began = time.perf_counter()
    for s in symbols:
        check_symbol(s)
    for r in resolutions:
        check_resolution(r)
    if not days:
        raise ValidationError("days", "must name at least one day")
    now_ms = to_ms(utcnow()) if now_ms is None else now_ms
    plan: list[tuple[str, str, list[DayWindow]]] = []
    for symbol in symbols:
        for resolution in resolutions:
            windows = []
            for day in sorted(set(days)):
                try:
                    windows.append(day_window(day, resolution, now_ms))
                except ValidationError:
                    continue  # no closed candle yet (today's daily candle, a future day)
            plan.extend((symbol, resolution, chunk) for chunk in _chunks(windows, resolution))
    total = sum(len(chunk) for _, _, chunk in plan)
    kind, origin = client_source(client)
    report = BackfillReport()
    done = 0
    for symbol, resolution, chunk in plan:
        start, end = chunk[0].start_ms, chunk[-1].end_ms
        frame = to_candle_frame(
            client.fetch_candles(symbol, resolution, start, end), source="exchange candles"
        )
        report.requests += -(-(end - start) // (CANDLES_PER_REQUEST * resolution_ms(resolution)))
        by_day = {
            k[0]: v
            for k, v in frame.with_columns(_d=pl.col("open_time") // DAY_MS)
            .partition_by("_d", as_dict=True, include_key=False)
            .items()
        }
        for window in chunk:
            candles = by_day.get(window.start_ms // DAY_MS, frame.clear())
            result = store_checked_day(
                candles, symbol, resolution, window, "exchange", settings, kind=kind, origin=origin
            )
            report.days.append(result)
            done += 1
            if progress is not None:
                progress(done, total, result)
    report.seconds = time.perf_counter() - began
    return report
