"""The candle frame every part of the platform exchanges, and reading it from files and replies.

Schema (`CANDLE_SCHEMA`, one row per candle): `open_time` Int64 UTC epoch ms of the candle open,
`open`, `high`, `low`, `close`, `volume` Float64 (volume in the traded coin).

One time rule everywhere (lake, importer, exchange client, strategy contract): epoch ms (µs is
recognised by size), an aware datetime in any zone, or a naive datetime / ISO text without offset,
which means UTC — the platform's times are UTC, as are the exchanges' files. Anything else is
refused naming `<source>.open_time`.

Files: Parquet or CSV with the candle columns; Binance's public kline files (data.binance.vision:
12 columns, with or without a header, `.csv` or the `.zip` they ship in); CoinDCX's candle JSON
(`/market_data/candles`: an array of {open, high, low, volume, close, time}, newest first, or the
futures `{"s", "data"}`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import polars as pl

from xcoin_trading.errors import ValidationError

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
CANDLE_COLUMNS = ("open_time", *VALUE_COLUMNS)
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "open_time": pl.Int64(),
    **{c: pl.Float64() for c in VALUE_COLUMNS},
}
# data.binance.vision kline columns (spot and futures); only the first six are candles.
BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
MICROS_FROM = 100_000_000_000_000  # an epoch time this large is µs (as ms it would be the year 5138)
MAX_LISTED = 5


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def listed(values: list[str]) -> str:
    """The first few of `values` for an error message, with how many more there are."""
    more = f" (+{len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else ""
    return ", ".join(values[:MAX_LISTED]) + more


def _check_columns(columns: list[str], field: str, name: str = "") -> None:
    missing = [c for c in CANDLE_COLUMNS if c not in columns]
    if missing:
        raise ValidationError(
            field, f"{name}is missing column(s) {', '.join(missing)}; need {', '.join(CANDLE_COLUMNS)}"
        )


def to_candle_frame(df: pl.DataFrame, source: str = "candles") -> pl.DataFrame:
    """Cast a frame to the candle schema; raises naming missing or non-numeric columns.

    `open_time`: epoch ms integers or a datetime column (aware in any zone, or naive = UTC).
    Extra columns are dropped. Rows are not reordered: quality checks must see the input as given.
    """
    _check_columns(df.columns, source)
    t = df.schema["open_time"]
    if isinstance(t, pl.Datetime):
        open_time = pl.col("open_time")
        if t.time_zone is not None:
            open_time = open_time.dt.convert_time_zone("UTC")
        open_time = open_time.dt.epoch("ms")
    elif t.is_integer():
        open_time = pl.col("open_time").cast(pl.Int64)
    else:
        raise ValidationError(
            f"{source}.open_time", f"must be epoch milliseconds or a (UTC) datetime, got {t}"
        )
    for c in VALUE_COLUMNS:
        if not df.schema[c].is_numeric():
            raise ValidationError(f"{source}.{c}", f"must be numeric, got {df.schema[c]}")
    return df.select(open_time.alias("open_time"), *[pl.col(c).cast(pl.Float64) for c in VALUE_COLUMNS])


def from_coindcx(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A candle frame from CoinDCX candle objects ({time, open, high, low, close, volume}), in
    reply order; numbers may be JSON numbers or numeric strings."""
    if not rows:
        return empty_candles()
    columns = {"open_time": [int(r["time"]) for r in rows]}
    columns |= {c: [r[c] for r in rows] for c in VALUE_COLUMNS}
    return pl.DataFrame(columns, schema=CANDLE_SCHEMA, strict=False)


def exchange_window(rows: list[dict[str, Any]], start_ms: int, end_ms: int) -> pl.DataFrame:
    """The candles of reply pages with start_ms <= open_time < end_ms, ascending, exact
    duplicates removed; nothing else cleaned (the market-data layer must see what was sent)."""
    return (
        from_coindcx(rows)
        .filter((pl.col("open_time") >= start_ms) & (pl.col("open_time") < end_ms))
        .unique(maintain_order=True)
        .sort("open_time", maintain_order=True)
    )


def _micros_to_ms(open_time: pl.Expr | pl.Series) -> pl.Expr:
    return pl.when(open_time >= MICROS_FROM).then(open_time // 1000).otherwise(open_time)


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
    _check_columns(raw.columns, "file", f"{name} ")
    first_line = 1 if headerless else 2  # a header is line 1
    lines = pl.int_range(first_line, raw.height + first_line, eager=True).alias("line")
    raw = raw.with_columns(lines)
    numbers = {c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in VALUE_COLUMNS}
    for c in VALUE_COLUMNS:
        bad = raw.filter(numbers[c].is_null() & pl.col(c).str.strip_chars().ne("").fill_null(False))
        if bad.height:
            cells = [f"line {ln}: {v!r}" for ln, v in bad.select("line", c).iter_rows()]
            raise ValidationError(
                f"{name}.{c}", f"must be numeric; {bad.height} bad value(s): {listed(cells)}"
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
            f"must be epoch ms or µs or an ISO time; {bad.height} bad value(s): {listed(cells)}",
        )
    return parsed.select(CANDLE_COLUMNS), "binance" if binance else "file"


def _parse_times(text: pl.Series) -> pl.Series:
    """Epoch-ms (or µs) integers or ISO times (UTC unless an offset is given); unparseable → null."""
    text = text.str.strip_chars()
    ints = pl.select(_micros_to_ms(text.cast(pl.Int64, strict=False))).to_series()
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
        frame = from_coindcx([r | {c: float(r[c]) for c in VALUE_COLUMNS} for r in rows])
    except (TypeError, ValueError) as exc:
        raise ValidationError(name, f"has a non-numeric value: {exc}") from None
    frame = frame.with_columns(open_time=_micros_to_ms(pl.col("open_time")))
    return frame.sort("open_time")  # CoinDCX sends newest first


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
    """A candle file (any format `read_candle_source` reads) as a candle frame, in file order."""
    return read_candle_source(path)[0]
