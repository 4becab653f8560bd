"""Import a candle file into the lake, one checked day at a time.

Readers: `xcoin_trading.candles`; formats, sources and checks: docs/market-data.md ("Import and backfill")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from xcoin_trading.candles import listed, read_candle_source, to_candle_frame
from xcoin_trading.config import Settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.marketdata.candles import check_resolution, check_symbol
from xcoin_trading.marketdata.lake import SOURCES, day_of, partition_path, write_partition
from xcoin_trading.marketdata.quality import QualityReport, as_ms, check_candles
from xcoin_trading.timeframes import DAY_MS, resolution_ms, to_ms, utcnow


@dataclass(frozen=True)
class DayResult:
    day: str
    rows: int
    written: bool
    replaced: bool
    report: QualityReport


@dataclass
class ImportReport:
    symbol: str
    resolution: str
    source: str
    rows_read: int
    kind: str = "file"  # the lake source recorded on each day
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> list[DayResult]:
        return [d for d in self.days if d.written]

    @property
    def rejected(self) -> list[DayResult]:
        return [d for d in self.days if not d.written]

    @property
    def rows_written(self) -> int:
        return sum(d.rows for d in self.written)

    @property
    def gaps(self) -> int:
        return sum(len(d.report.gaps) for d in self.days)

    def summary_line(self) -> str:
        rate = self.rows_written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"imported {self.rows_written:,} {self.symbol} {self.resolution} candles into {len(self.written)} day(s), "
            f"rejected {len(self.rejected)} day(s), {self.gaps} gap(s), source {self.kind}, "
            f"{self.seconds:.1f}s ({rate:,.0f} rows/s)"
        )

    def describe_rejections(self) -> str:
        return "\n".join(
            f"{d.day}: {d.rows} rows, nothing written\n{_indent(d.report.describe())}" for d in self.rejected
        )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _check_times(frame: pl.DataFrame, resolution: str, name: str) -> None:
    t = frame["open_time"]
    if t.null_count():
        rows = frame.with_row_index("row").filter(pl.col("open_time").is_null())["row"].to_list()
        raise ValidationError(
            f"{name}.open_time", f"is missing on {len(rows)} row(s): {listed([str(r) for r in rows])}"
        )
    if frame.height and as_ms(t.max()) < 100_000_000_000:  # before 1973 in ms, but 5138 AD in seconds
        raise ValidationError(
            f"{name}.open_time", "looks like epoch seconds; the lake stores epoch milliseconds"
        )
    step = resolution_ms(resolution)
    diffs = t.unique().sort().diff().drop_nulls()
    if len(diffs) >= 2:
        common = as_ms(diffs.mode().min())
        if common != step:
            raise ValidationError(
                "resolution",
                f"is {resolution}, but the candles in {name} are mostly {common // 60_000} minutes apart",
            )


def import_candles(
    source: str | Path | pl.DataFrame,
    symbol: str,
    resolution: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
    progress: Callable[[int, int, DayResult], None] | None = None,
    origin: str | None = None,
) -> ImportReport:
    """Load candles into the lake partitions of `symbol`/`resolution`; returns what happened per day.

    `start`/`end` (UTC, end exclusive) import a slice of the file. Each day replaces the lake's day.
    `progress(done, total, day_result)` is called after each day. `origin` overrides the detected
    source (e.g. `binance` for a Parquet file converted from Binance's klines).
    """
    began = time.perf_counter()
    check_symbol(symbol)
    check_resolution(resolution)
    if isinstance(source, pl.DataFrame):
        frame, name, detected = to_candle_frame(source), "candles", "file"
    else:
        (frame, detected), name = read_candle_source(source), Path(source).name
    kind = origin or detected
    if kind not in SOURCES or kind == "simulator":
        raise ValidationError("source", f"must be one of binance, coindcx, file, got {kind!r}")
    if start is not None:
        frame = frame.filter(pl.col("open_time") >= to_ms(start))
    if end is not None:
        frame = frame.filter(pl.col("open_time") < to_ms(end))
    if frame.height == 0:
        raise ValidationError(
            "file", f"{name} has no candles{' in the requested range' if start or end else ''}"
        )
    _check_times(frame, resolution, name)
    report = ImportReport(
        symbol=symbol, resolution=resolution, source=name, rows_read=frame.height, kind=kind
    )
    by_day = frame.with_columns(_day=pl.col("open_time") // DAY_MS).partition_by(
        "_day", as_dict=True, include_key=False
    )
    now_ms = to_ms(utcnow())
    ordered = sorted(by_day.items())
    for done, ((day_number,), rows) in enumerate(ordered, start=1):
        day = day_of(day_number * DAY_MS)
        day_end = (day_number + 1) * DAY_MS
        partial = day_end > now_ms
        checks = check_candles(rows, resolution, day, expect_complete=False)
        result_written = checks.ok
        replaced = partition_path(symbol, resolution, day, settings).exists()
        if result_written:
            last = as_ms(rows["open_time"].max())
            write_partition(
                rows,
                symbol,
                resolution,
                day,
                partial=partial,
                source=kind,
                origin=name,
                complete_until_ms=last + resolution_ms(resolution) if partial else None,
                settings=settings,
            )
        result = DayResult(
            day=day,
            rows=rows.height,
            written=result_written,
            replaced=replaced and result_written,
            report=checks,
        )
        report.days.append(result)
        if progress is not None:
            progress(done, len(ordered), result)
    report.seconds = time.perf_counter() - began
    return report
