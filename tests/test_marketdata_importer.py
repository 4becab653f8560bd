"""Importing Parquet and CSV files: good days land, bad rows are reported, nothing half-written."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import polars as pl
import pytest

from tests.conftest import shared_data_file, utc_day
from tests.fixtures.marketdata import BTC_1M_JAN
from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.marketdata import load_candles
from xcoin_trading.marketdata.importer import import_candles
from xcoin_trading.marketdata.lake import list_days


def _lake_files() -> list[str]:
    lake = get_settings().lake_dir
    return sorted(p.name for p in lake.rglob("*") if p.is_file()) if lake.exists() else []


def test_a_csv_with_iso_times_imports_like_the_parquet_it_came_from(btc_1m_three_days, tmp_path):
    csv = tmp_path / "btc.csv"
    btc_1m_three_days.with_columns(
        pl.from_epoch("open_time", time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).write_csv(csv)
    report = import_candles(csv, "BTCUSDT", "1m")
    assert (len(report.written), report.rows_written, len(report.rejected)) == (3, 4320, 0)
    got = load_candles("BTCUSDT", "1m", datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC))
    assert got.equals(btc_1m_three_days)
    assert "imported 4,320 BTCUSDT 1m candles into 3 day(s), rejected 0 day(s)" in report.summary_line()


def test_a_day_with_a_bad_row_is_rejected_with_the_row_named_and_the_other_days_land(
    btc_1m_three_days, tmp_path
):
    row = 1440 + 333  # 2024-01-03 05:33
    bad = btc_1m_three_days.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(math.nan).otherwise(pl.col("close")).alias("close")
    )
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    report = import_candles(path, "BTCUSDT", "1m")
    assert [d.day for d in report.written] == ["2024-01-02", "2024-01-04"]
    assert [d.day for d in report.rejected] == ["2024-01-03"]
    assert list_days("BTCUSDT", "1m") == ["2024-01-02", "2024-01-04"]
    text = report.describe_rejections()
    assert "2024-01-03: 1440 rows, nothing written" in text
    assert "open_time=2024-01-03T05:33:00Z" in text and "close is NaN" in text


def test_rejected_day_keeps_the_previous_good_version(btc_1m_three_days, tmp_path):
    import_candles(btc_1m_three_days, "BTCUSDT", "1m")
    before = load_candles("BTCUSDT", "1m", datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC))
    dup = pl.concat([btc_1m_three_days, btc_1m_three_days.slice(2000, 1)])
    report = import_candles(dup, "BTCUSDT", "1m")
    assert [d.day for d in report.rejected] == ["2024-01-03"]
    assert report.rejected[0].report.check("no_duplicate_times").failed
    after = load_candles("BTCUSDT", "1m", datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC))
    assert after.equals(before)


def test_a_csv_missing_a_column_is_refused_and_nothing_is_written(btc_1m_three_days, tmp_path):
    csv = tmp_path / "no_volume.csv"
    btc_1m_three_days.drop("volume").write_csv(csv)
    with pytest.raises(ValidationError) as err:
        import_candles(csv, "BTCUSDT", "1m")
    assert err.value.field == "file"
    assert "missing column(s) volume" in err.value.reason
    assert _lake_files() == []


def test_a_non_numeric_price_is_refused_naming_column_line_and_value(btc_1m_three_days, tmp_path):
    csv = tmp_path / "text_price.csv"
    btc_1m_three_days.head(10).with_columns(pl.col("high").cast(pl.String)).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("42k")).otherwise(pl.col("high")).alias("high")
    ).write_csv(csv)
    with pytest.raises(ValidationError) as err:
        import_candles(csv, "BTCUSDT", "1m")
    assert err.value.field == "text_price.csv.high"
    assert "line 6: '42k'" in err.value.reason  # header is line 1, row 4 is line 6
    assert _lake_files() == []


def test_an_unparseable_time_is_refused_with_its_line(btc_1m_three_days, tmp_path):
    csv = tmp_path / "times.csv"
    frame = btc_1m_three_days.head(5).with_columns(pl.col("open_time").cast(pl.String))
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit("yesterday"))
        .otherwise(pl.col("open_time"))
        .alias("open_time")
    ).write_csv(csv)
    with pytest.raises(ValidationError, match="line 4: 'yesterday'"):
        import_candles(csv, "BTCUSDT", "1m")


def test_epoch_seconds_are_refused(btc_1m_three_days):
    seconds = btc_1m_three_days.with_columns(pl.col("open_time") // 1000)
    with pytest.raises(ValidationError, match="epoch seconds"):
        import_candles(seconds, "BTCUSDT", "1m")


def test_importing_hourly_candles_as_1m_is_refused():
    path = shared_data_file("BTCUSDT-1h-2017-08_2024-12.parquet")
    with pytest.raises(ValidationError) as err:
        import_candles(path, "BTCUSDT", "1m", start=utc_day("2024-01-01"), end=utc_day("2024-01-03"))
    assert err.value.field == "resolution"
    assert "mostly 60 minutes apart" in err.value.reason


@pytest.mark.parametrize(
    ("symbol", "resolution", "field"), [("NOPEUSDT", "1m", "symbol"), ("BTCUSDT", "3m", "resolution")]
)
def test_unknown_symbol_or_resolution_is_refused(symbol, resolution, field):
    with pytest.raises(ValidationError) as err:
        import_candles(shared_data_file(BTC_1M_JAN), symbol, resolution)
    assert err.value.field == field


def test_other_file_types_and_missing_files_are_refused(tmp_path):
    (tmp_path / "candles.txt").write_text("[]")
    with pytest.raises(ValidationError, match=r"must be a \.parquet, \.csv, \.json or \.zip file"):
        import_candles(tmp_path / "candles.txt", "BTCUSDT", "1m")
    (tmp_path / "candles.json").write_text('{"candles": 1}')
    with pytest.raises(ValidationError, match="must be CoinDCX candle JSON"):
        import_candles(tmp_path / "candles.json", "BTCUSDT", "1m")
    with pytest.raises(ValidationError, match="does not exist"):
        import_candles(tmp_path / "nope.parquet", "BTCUSDT", "1m")


def test_real_exchange_gaps_are_imported_and_reported_as_warnings():
    # XRPUSDT 2021-04-25: Binance was down from 04:01 for 283 minutes (README of ../shared/data).
    path = shared_data_file("XRPUSDT-1m-2021-04_2021-06.parquet")
    report = import_candles(
        path, "XRPUSDT", "1m", start=datetime(2021, 4, 25, tzinfo=UTC), end=datetime(2021, 4, 26, tzinfo=UTC)
    )
    (day,) = report.days
    assert day.written and day.rows == 1440 - 283
    (gap,) = day.report.gaps
    assert gap.missing == 283
    assert day.report.check("regular_grid").severity == "warn"
