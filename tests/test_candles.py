"""One candle frame: the lake importer's reader and the strategy contract's reader agree on every
format, and a naive time means UTC in both."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from xcoin_trading.candles import CANDLE_SCHEMA, exchange_window, read_candle_file
from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy import read_candles_file

OPENS = [datetime(2024, 1, 1, 0, m, tzinfo=UTC) for m in range(5)]
# Epoch ms computed by the standard library, not by the code under test.
EXPECTED_MS = [int(t.timestamp()) * 1000 for t in OPENS]
CLOSES = [42_000.5, 42_010.0, 41_990.25, 42_005.0, 42_020.75]


def _expected() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "open_time": EXPECTED_MS,
            "open": CLOSES,
            "high": [c + 10 for c in CLOSES],
            "low": [c - 10 for c in CLOSES],
            "close": CLOSES,
            "volume": [1.5, 2.0, 0.5, 3.25, 1.0],
        },
        schema=CANDLE_SCHEMA,
    )


def _write_parquet(path, open_time: pl.Series) -> None:
    _expected().with_columns(open_time.alias("open_time")).write_parquet(path)


def _csv_lines(times: list[str]) -> str:
    rows = _expected().drop("open_time").rows()
    return "\n".join(f"{t},{o},{h},{lo},{c},{v}" for t, (o, h, lo, c, v) in zip(times, rows, strict=True))


def _write(tmp_path, kind: str):
    naive = [t.replace(tzinfo=None) for t in OPENS]
    if kind == "parquet naive datetime":
        path = tmp_path / "c.parquet"
        _write_parquet(path, pl.Series(naive, dtype=pl.Datetime("us")))
    elif kind == "parquet datetime in another zone":
        path = tmp_path / "c.parquet"
        _write_parquet(path, pl.Series(OPENS).dt.convert_time_zone("Asia/Kolkata"))
    elif kind == "parquet epoch ms":
        path = tmp_path / "c.parquet"
        _expected().write_parquet(path)
    elif kind == "csv iso without offset":
        path = tmp_path / "c.csv"
        times = [t.strftime("%Y-%m-%d %H:%M:%S") for t in naive]
        path.write_text("open_time,open,high,low,close,volume\n" + _csv_lines(times))
    elif kind == "csv iso with offset":
        path = tmp_path / "c.csv"
        times = [(t + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30") for t in naive]
        path.write_text("open_time,open,high,low,close,volume\n" + _csv_lines(times))
    elif kind == "binance zip, µs, no header":
        path = tmp_path / "c.zip"
        rows = _csv_lines([str(ms * 1000) for ms in EXPECTED_MS]).splitlines()
        text = "\n".join(r + ",0,0,0,0,0,0" for r in rows)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("BTCUSDT-1m-2024-01-01.csv", text)
    else:  # coindcx json, newest first, numbers as strings
        path = tmp_path / "c.json"
        rows = [
            {"time": ms, "open": str(o), "high": str(h), "low": str(lo), "close": str(c), "volume": str(v)}
            for ms, o, h, lo, c, v in _expected().rows()
        ]
        path.write_text(json.dumps(rows[::-1]))
    return path


KINDS = [
    "parquet naive datetime",
    "parquet datetime in another zone",
    "parquet epoch ms",
    "csv iso without offset",
    "csv iso with offset",
    "binance zip, µs, no header",
    "coindcx json",
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_importer_and_the_contract_read_the_same_candles(tmp_path, kind):
    path = _write(tmp_path, kind)
    imported = read_candle_file(path)
    for_strategy = read_candles_file(path)
    assert imported.schema == for_strategy.schema == CANDLE_SCHEMA
    assert imported.equals(for_strategy)
    assert imported.equals(_expected()), kind


def test_a_reply_from_the_exchange_is_the_same_frame():
    rows = [
        {"time": ms, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for ms, o, h, lo, c, v in _expected().rows()
    ]
    assert exchange_window(rows[::-1] + rows[:1], EXPECTED_MS[0], EXPECTED_MS[-1] + 60_000).equals(
        _expected()
    )


@pytest.mark.parametrize("read", [read_candle_file, read_candles_file])
def test_both_readers_refuse_a_time_column_that_is_no_time_naming_it(tmp_path, read):
    path = tmp_path / "bad.parquet"
    _write_parquet(path, pl.Series([0.5] * 5))
    with pytest.raises(ValidationError) as err:
        read(path)
    assert err.value.field.endswith("bad.parquet.open_time") and "Float64" in err.value.reason
