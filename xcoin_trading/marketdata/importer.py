"""Import a candle file into the lake, one checked day at a time.

Formats, sources and what is checked: docs/market-data.md ("Import and backfill")."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from xcoin_trading.config import Settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.marketdata.candles import (
    CANDLE_COLUMNS,
    VALUE_COLUMNS,
    check_resolution,
    check_symbol,
    to_candle_frame,
)
from xcoin_trading.marketdata.lake import SOURCES, day_of, partition_path, write_partition
from xcoin_trading.marketdata.quality import QualityReport, check_candles
from xcoin_trading.timeframes import DAY_MS, resolution_ms, to_ms, utcnow

MAX_LISTED = 5


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


def _listed(values: list[str]) -> str:
    more = f" (+{len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else ""
    return ", ".join(values[:MAX_LISTED]) + more


# data.binance.vision kline columns (spot and futures); only the first six are candles.
BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
MICROS_FROM = 100_000_000_000_000  # an epoch time this large is µs (as ms it would be the year 5138)


def _first_line(data: bytes) -> list[str]:
    line = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    return [c.strip().lower() for c in line.split(",")]


def _read_csv(data: bytes, name: str) -> tuple[pl.DataFrame, str]:
    """CSV as text first, so a bad cell is reported with its line instead of a parser trace.
    A header-less file with Binance's 12 columns (or 6 candle columns) is read by position."""
    first = _first_line(data)
    headerless = bool(first) and first[0].lstrip("-").isdigit()
    binance = (headerless and len(first) == len(BINANCE_COLUMNS)) or (
        not headerless and {"close_time", "taker_buy_volume"} <= set(first)
    )
    if headerless and len(first) not in (len(BINANCE_COLUMNS), len(CANDLE_COLUMNS)):
        raise ValidationError(
            "file", f"{name} has no header and {len(first)} columns; a header-less file needs Binance's "
            f"{len(BINANCE_COLUMNS)} kline columns or {', '.join(CANDLE_COLUMNS)}"
        )  # fmt: skip
    try:
        if headerless:
            names = BINANCE_COLUMNS if len(first) == len(BINANCE_COLUMNS) else CANDLE_COLUMNS
            raw = pl.read_csv(data, has_header=False, new_columns=list(names), infer_schema=False)
        else:
            raw = pl.read_csv(data, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise ValidationError("file", f"{name} is not a readable CSV: {exc}") from None
    raw = raw.rename({c: c.strip().lower() for c in raw.columns})
    missing = [c for c in CANDLE_COLUMNS if c not in raw.columns]
    if missing:
        raise ValidationError(
            "file", f"{name} is missing column(s) {', '.join(missing)}; need {', '.join(CANDLE_COLUMNS)}"
        )
    first_line = 1 if headerless else 2  # a header is line 1
    lines = pl.int_range(first_line, raw.height + first_line, eager=True).alias("line")
    raw = raw.with_columns(lines)
    numbers = {c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in VALUE_COLUMNS}
    for c in VALUE_COLUMNS:
        bad = raw.filter(numbers[c].is_null() & pl.col(c).str.strip_chars().ne("").fill_null(False))
        if bad.height:
            cells = [f"line {ln}: {v!r}" for ln, v in bad.select("line", c).iter_rows()]
            raise ValidationError(
                f"{name}.{c}", f"must be numeric; {bad.height} bad value(s): {_listed(cells)}"
            )
    parsed = raw.with_columns(open_time=_parse_times(raw["open_time"]), **numbers)
    bad = parsed.filter(pl.col("open_time").is_null())
    if bad.height:
        cells = [
            f"line {ln}: {v!r}"
            for ln, v in raw.filter(pl.col("line").is_in(bad["line"].implode()))
            .select("line", "open_time")
            .iter_rows()
        ]
        raise ValidationError(
            f"{name}.open_time",
            f"must be epoch ms or µs or an ISO time; {bad.height} bad value(s): {_listed(cells)}",
        )
    return parsed.select(CANDLE_COLUMNS), "binance" if binance else "file"


def _parse_times(text: pl.Series) -> pl.Series:
    """Epoch-ms (or µs) integers or ISO times (UTC unless an offset is given); unparseable → null."""
    text = text.str.strip_chars()
    ints = text.cast(pl.Int64, strict=False)
    ints = pl.select(pl.when(ints >= MICROS_FROM).then(ints // 1000).otherwise(ints)).to_series()
    rest = text.filter(ints.is_null() & text.is_not_null())
    if rest.len() == 0:
        return ints
    try:
        stamps = rest.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms").dt.epoch("ms")
    except pl.exceptions.PolarsError:  # no common ISO format could be inferred
        stamps = pl.Series(dtype=pl.Int64, values=[None] * rest.len())
    return ints.scatter((ints.is_null() & text.is_not_null()).arg_true(), stamps)


def _read_coindcx_json(data: bytes, name: str) -> pl.DataFrame:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ValidationError("file", f"{name} is not valid JSON: {exc}") from None
    rows = body.get("data") if isinstance(body, dict) else body  # futures candlesticks: {"s", "data"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValidationError(
            "file",
            f"{name} must be CoinDCX candle JSON: an array of {{open, high, low, close, volume, time}}",
        )
    need = ("time", *VALUE_COLUMNS)
    for i, row in enumerate(rows):
        missing = [k for k in need if row.get(k) is None]
        if missing:
            raise ValidationError(f"{name}[{i}]", f"is missing {', '.join(missing)}")
    try:
        frame = pl.DataFrame(
            {
                "open_time": [int(r["time"]) for r in rows],
                **{c: [float(r[c]) for r in rows] for c in VALUE_COLUMNS},
            }
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(name, f"has a non-numeric value: {exc}") from None
    frame = frame.with_columns(
        open_time=pl.when(pl.col("open_time") >= MICROS_FROM)
        .then(pl.col("open_time") // 1000)
        .otherwise(pl.col("open_time"))
    )
    return frame.select(CANDLE_COLUMNS).sort("open_time")  # CoinDCX sends newest first


def _unzip(path: Path) -> tuple[bytes, str]:
    """The one candle file inside a zip (Binance ships each month or day as one zipped CSV)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [
                m
                for m in archive.namelist()
                if m.lower().endswith((".csv", ".json")) and not m.startswith("__")
            ]
            if len(members) != 1:
                raise ValidationError(
                    "file", f"{path.name} must hold exactly one .csv or .json file, found {len(members)}"
                )
            return archive.read(members[0]), members[0]
    except zipfile.BadZipFile as exc:
        raise ValidationError("file", f"{path.name} is not a readable zip file: {exc}") from None


def read_candle_source(path: str | Path) -> tuple[pl.DataFrame, str]:
    """(candle frame in file order, lake source: binance | coindcx | file); raises on bad structure."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError("file", f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except pl.exceptions.PolarsError as exc:
            raise ValidationError("file", f"{path.name} is not a readable Parquet file: {exc}") from None
        return to_candle_frame(frame, source=path.name), "file"
    if suffix not in (".csv", ".json", ".zip"):
        raise ValidationError("file", f"must be a .parquet, .csv, .json or .zip file, got {path.name}")
    data, name = _unzip(path) if suffix == ".zip" else (path.read_bytes(), path.name)
    if name.lower().endswith(".json"):
        return _read_coindcx_json(data, name), "coindcx"
    return _read_csv(data, name)


def read_candle_file(path: str | Path) -> pl.DataFrame:
    """A candle file (any format `read_candle_source` reads) as a candle frame."""
    return read_candle_source(path)[0]


def _check_times(frame: pl.DataFrame, resolution: str, name: str) -> None:
    t = frame["open_time"]
    if t.null_count():
        rows = frame.with_row_index("row").filter(pl.col("open_time").is_null())["row"].to_list()
        raise ValidationError(
            f"{name}.open_time", f"is missing on {len(rows)} row(s): {_listed([str(r) for r in rows])}"
        )
    if frame.height and t.max() < 100_000_000_000:  # before 1973 in ms, but 5138 AD in seconds
        raise ValidationError(
            f"{name}.open_time", "looks like epoch seconds; the lake stores epoch milliseconds"
        )
    step = resolution_ms(resolution)
    diffs = t.unique().sort().diff().drop_nulls()
    if len(diffs) >= 2:
        common = int(diffs.mode().min())
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
            last = int(rows["open_time"].max())
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
