"""Candle checks on real data and on seeded bad data: what fails, what only warns, which rows."""

from __future__ import annotations

import math

import polars as pl
import pytest

from xcoin_trading.marketdata.quality import check_candles

DAY = "2024-01-02"
DAY_START = 1704153600000  # 2024-01-02T00:00:00Z, by hand: 19724 days * 86_400_000


@pytest.fixture()
def day(btc_1m_three_days) -> pl.DataFrame:
    return btc_1m_three_days.head(1440)


def _set(frame: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    return frame.with_columns(
        [
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(v)).otherwise(pl.col(c)).alias(c)
            for c, v in values.items()
        ]
    )


def test_a_real_day_passes_every_check(day):
    assert day["open_time"][0] == DAY_START
    report = check_candles(day, "1m", DAY)
    assert report.ok and not report.warnings
    assert [c.name for c in report.checks] == [
        "no_duplicate_times",
        "regular_grid",
        "ohlc_sanity",
        "complete_day",
    ]
    assert (report.rows, report.first_ms, report.last_ms) == (1440, DAY_START, DAY_START + 1439 * 60_000)


def test_duplicate_times_fail_and_name_both_rows(day):
    bad = pl.concat([day.head(100), day.slice(99, 1), day.slice(100)])
    report = check_candles(bad, "1m", DAY)
    dup = report.check("no_duplicate_times")
    assert dup.failed and not report.ok
    assert [r["row"] for r in dup.offending] == [99, 100]
    assert {r["open_time"] for r in dup.offending} == {"2024-01-02T01:39:00Z"}


def test_out_of_order_rows_fail_the_grid_check(day):
    rows = list(range(1440))
    rows[500], rows[501] = 501, 500
    report = check_candles(day[rows], "1m", DAY)
    grid = report.check("regular_grid")
    assert grid.failed
    assert [(r["row"], r["open_time"]) for r in grid.offending] == [(501, "2024-01-02T08:20:00Z")]
    assert "out of order" in grid.offending[0]["reason"]


def test_misaligned_and_foreign_day_rows_fail_the_grid_check(day):
    shifted = _set(day, 10, open_time=DAY_START + 10 * 60_000 + 1)
    report = check_candles(shifted, "1m", DAY)
    assert report.check("regular_grid").offending[0]["row"] == 10
    assert "grid" in report.check("regular_grid").offending[0]["reason"]
    report = check_candles(day, "1m", "2024-01-03")
    assert report.check("regular_grid").failed
    assert report.check("regular_grid").count == 1440


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (dict(close=math.nan), "close is NaN or missing"),
        (dict(volume=-1.0), "volume < 0"),
        (dict(open=0.0), "open <= 0"),
        (dict(high=1.0), "high < max(open, close)"),
        (dict(low=1e9), "low > min(open, close)"),
    ],
)
def test_impossible_candles_fail_sanity_naming_row_and_reason(day, values, reason):
    report = check_candles(_set(day, 700, **values), "1m", DAY)
    sanity = report.check("ohlc_sanity")
    assert sanity.failed and sanity.count == 1
    assert sanity.offending[0]["row"] == 700
    assert sanity.offending[0]["open_time"] == "2024-01-02T11:40:00Z"
    assert reason in sanity.offending[0]["reason"]
    assert "row 700" in report.describe()


def test_null_values_are_reported_like_nan(day):
    bad = day.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("open")).alias("open")
    )
    assert (
        "open is NaN or missing" in check_candles(bad, "1m", DAY).check("ohlc_sanity").offending[0]["reason"]
    )


def test_an_interior_gap_only_warns_and_gives_its_range(day):
    holed = day.filter(
        (pl.col("open_time") < DAY_START + 600 * 60_000) | (pl.col("open_time") >= DAY_START + 605 * 60_000)
    )
    report = check_candles(holed, "1m", DAY)
    grid = report.check("regular_grid")
    assert report.ok and grid.severity == "warn" and not grid.passed
    assert [(g.start_ms, g.end_ms, g.missing) for g in report.gaps] == [
        (DAY_START + 600 * 60_000, DAY_START + 605 * 60_000, 5)
    ]
    assert "2024-01-02T10:00:00Z → 2024-01-02T10:05:00Z (5 missing)" in grid.summary
    assert report.check("complete_day").passed


def test_a_closed_day_missing_its_last_hour_fails_unless_it_is_partial(day):
    cut = day.head(1380)
    closed = check_candles(cut, "1m", DAY)
    assert closed.check("complete_day").failed
    assert "23:00:00Z → 2024-01-03T00:00:00Z (60 missing)" in closed.check("complete_day").summary
    partial = check_candles(cut, "1m", DAY, complete_until_ms=DAY_START + 1380 * 60_000)
    assert partial.ok and partial.check("complete_day").passed
    imported = check_candles(cut, "1m", DAY, expect_complete=False)
    assert imported.ok and imported.check("complete_day").severity == "warn"


def test_an_empty_answer_fails_completeness(day):
    report = check_candles(day.head(0), "1m", DAY)
    assert not report.ok
    assert report.check("complete_day").summary.startswith("no candles")
