"""The lake and its read API: what backtests and live execution get from `load_candles`."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from tests.conftest import shared_data_file
from tests.fixtures.marketdata import BTC_1M_JAN, CANDLE_SCHEMA, real_candles
from xcoin_trading.config import get_settings
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.marketdata import load_candles
from xcoin_trading.marketdata.importer import import_candles
from xcoin_trading.marketdata.lake import (
    lake_summary,
    list_partitions,
    partition_info,
    partition_path,
    read_partition,
    write_partition,
)

JAN = lambda day, hour=0, minute=0: datetime(2024, 1, day, hour, minute, tzinfo=UTC)  # noqa: E731


@pytest.fixture()
def lake_jan_2_to_4():
    report = import_candles(shared_data_file(BTC_1M_JAN), "BTCUSDT", "1m", start=JAN(2), end=JAN(5))
    assert [d.day for d in report.written] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    return report


def test_imported_days_are_stored_one_file_per_day_in_hive_layout(lake_jan_2_to_4):
    lake = get_settings().lake_dir
    files = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*") if p.is_file())
    assert files == [f"candles/symbol=BTCUSDT/resolution=1m/date=2024-01-0{d}.parquet" for d in (2, 3, 4)]


def test_load_candles_returns_exactly_the_source_candles_across_day_boundaries(lake_jan_2_to_4):
    start, end = JAN(2, 10, 0), JAN(4, 10, 30)
    got = load_candles("BTCUSDT", "1m", start, end)
    expected = real_candles(BTC_1M_JAN, start, end)
    assert got.schema == CANDLE_SCHEMA
    assert got.height == (48 * 60 + 30)  # two days and half an hour of minutes
    assert got.equals(expected)
    assert got["open_time"][0] == int(start.timestamp() * 1000)
    assert got["open_time"][-1] == int((end - timedelta(minutes=1)).timestamp() * 1000)


def test_load_candles_names_every_missing_day(lake_jan_2_to_4):
    with pytest.raises(NotFound) as err:
        load_candles("BTCUSDT", "1m", JAN(1), JAN(8))
    message = str(err.value)
    assert "2024-01-01" in message and "2024-01-05..2024-01-07" in message
    assert "4 day(s)" in message


def test_load_candles_for_a_resolution_never_stored_says_which_days(lake_jan_2_to_4):
    with pytest.raises(NotFound, match="BTCUSDT 1h candles for 1 day"):
        load_candles("BTCUSDT", "1h", JAN(2), JAN(3))


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        (dict(symbol="NOPEINR"), "symbol", "not a known market"),
        (dict(resolution="2m"), "resolution", "must be one of"),
        (dict(resolution="30m"), "resolution", "stored in the lake"),
        (dict(start=datetime(2024, 1, 2)), "start", "timezone-aware"),
        (dict(start=JAN(3), end=JAN(2)), "end", "must be after start"),
        (dict(start=JAN(2), end=JAN(2)), "end", "must be after start"),
    ],
)
def test_load_candles_rejects_bad_arguments_naming_the_field(kwargs, field, reason):
    args = dict(symbol="BTCUSDT", resolution="1m", start=JAN(2), end=JAN(3)) | kwargs
    with pytest.raises(ValidationError) as err:
        load_candles(**args)
    assert err.value.field == field
    assert reason in err.value.reason


def test_reimport_replaces_the_day_and_leaves_no_temporary_files(lake_jan_2_to_4):
    path = partition_path("BTCUSDT", "1m", "2024-01-03")
    day = read_partition("BTCUSDT", "1m", "2024-01-03")
    changed = day.with_columns(pl.col("volume") * 2)
    write_partition(changed, "BTCUSDT", "1m", "2024-01-03", source="binance")
    assert read_partition("BTCUSDT", "1m", "2024-01-03")["volume"].to_list() == (day["volume"] * 2).to_list()
    assert sorted(p.name for p in path.parent.iterdir()) == [f"date=2024-01-0{d}.parquet" for d in (2, 3, 4)]


def test_a_rewrite_that_fails_midway_leaves_the_previous_day_readable(lake_jan_2_to_4, monkeypatch):
    before = read_partition("BTCUSDT", "1m", "2024-01-03")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_partition(before.head(10), "BTCUSDT", "1m", "2024-01-03")
    monkeypatch.undo()
    assert read_partition("BTCUSDT", "1m", "2024-01-03").equals(before)
    folder = partition_path("BTCUSDT", "1m", "2024-01-03").parent
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_refuses_rows_outside_the_day_or_duplicated(btc_1m_three_days):
    with pytest.raises(ValidationError, match="within 2024-01-02"):
        write_partition(btc_1m_three_days, "BTCUSDT", "1m", "2024-01-02")
    day = btc_1m_three_days.head(5)
    with pytest.raises(ValidationError, match="duplicate open times"):
        write_partition(pl.concat([day, day.head(1)]), "BTCUSDT", "1m", "2024-01-02")
    assert not partition_path("BTCUSDT", "1m", "2024-01-02").exists()


def test_a_partial_day_is_marked_in_the_file_and_in_the_summary(btc_1m_three_days):
    first_hours = btc_1m_three_days.head(180)
    until = int(first_hours["open_time"][-1]) + 60_000
    path = write_partition(first_hours, "BTCUSDT", "1m", "2024-01-02", partial=True, complete_until_ms=until)
    info = partition_info(path)
    assert (info.partial, info.complete_until_ms, info.day) == (True, until, "2024-01-02")
    write_partition(btc_1m_three_days.slice(1440, 1440), "BTCUSDT", "1m", "2024-01-03")
    assert [i.partial for i in list_partitions()] == [True, False]
    summary = lake_summary().row(0, named=True)
    assert summary == {
        "symbol": "BTCUSDT",
        "resolution": "1m",
        "days": 2,
        "partial_days": 1,
        "first_day": "2024-01-02",
        "last_day": "2024-01-03",
        "sources": "file",
        "simulated_days": 0,
    }
    # The read API returns the partial day as far as it goes.
    assert load_candles("BTCUSDT", "1m", JAN(2), JAN(3)).height == 180
