"""Resampling 1m candles equals the exchange's own candles on clean data."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from tests.fixtures.marketdata import BTC_1M_JAN, real_candles
from xcoin_trading.errors import ValidationError
from xcoin_trading.marketdata.resample import resample


def _plain_loop(candles: pl.DataFrame, step_ms: int) -> list[tuple]:
    """Independent reference: one pass, first/max/min/last/sum per bucket."""
    out: dict[int, list] = {}
    for t, o, h, lo, c, v in candles.iter_rows():
        b = t - t % step_ms
        if b not in out:
            out[b] = [b, o, h, lo, c, v]
        else:
            agg = out[b]
            agg[2], agg[3], agg[4], agg[5] = max(agg[2], h), min(agg[3], lo), c, agg[5] + v
    return [tuple(x) for x in out.values()]


def test_hourly_candles_from_a_month_of_1m_equal_the_exchange_1h_candles():
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    minutes = real_candles(BTC_1M_JAN, start, end)
    exchange_hours = real_candles("BTCUSDT-1h-2017-08_2024-12.parquet", start, end)
    built = resample(minutes, "1h")
    assert built.height == exchange_hours.height == 744
    for col in ("open_time", "open", "high", "low", "close"):
        assert built[col].to_list() == exchange_hours[col].to_list(), col
    # Volume is a float sum of 60 values; the reference file summed them in another order, so
    # only the last bits may differ (largest relative difference seen: ~1e-15).
    rel = ((built["volume"] - exchange_hours["volume"]).abs() / exchange_hours["volume"]).max()
    assert rel < 1e-12


@pytest.mark.parametrize(
    ("resolution", "step"), [("5m", 300_000), ("15m", 900_000), ("4h", 14_400_000), ("1d", 86_400_000)]
)
def test_every_traded_resolution_matches_a_plain_loop(btc_1m_three_days, resolution, step):
    built = resample(btc_1m_three_days, resolution)
    expected = _plain_loop(btc_1m_three_days, step)
    assert built.height == len(expected) == 3 * 86_400_000 // step
    for got, want in zip(built.iter_rows(), expected, strict=True):
        assert got[:5] == want[:5]
        assert got[5] == pytest.approx(want[5], rel=1e-12)


def test_a_bucket_with_an_exchange_outage_is_kept_from_the_candles_that_exist(btc_1m_three_days):
    holed = btc_1m_three_days.filter(
        ~pl.col("open_time").is_between(1704153600000 + 10 * 60_000, 1704153600000 + 49 * 60_000)
    )
    first_hour = resample(holed, "1h").row(0)
    minutes = holed.head(20).rows()
    assert first_hour[1] == minutes[0][1] and first_hour[4] == minutes[-1][4]
    assert first_hour[2] == max(r[2] for r in minutes)


def test_an_unclosed_bucket_is_dropped_when_a_cut_off_is_given(btc_1m_three_days):
    first_90_minutes = btc_1m_three_days.head(90)
    cut = int(first_90_minutes["open_time"][-1]) + 60_000
    assert resample(first_90_minutes, "1h").height == 2
    assert resample(first_90_minutes, "1h", closed_before_ms=cut).height == 1


@pytest.mark.parametrize(("target", "source"), [("1m", "5m"), ("1w", "1m"), ("7m", "1m")])
def test_impossible_resampling_is_refused(btc_1m_three_days, target, source):
    with pytest.raises(ValidationError) as err:
        resample(btc_1m_three_days, target, source_resolution=source)
    assert err.value.field == "resolution"
