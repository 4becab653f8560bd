"""The one reading of a time given as text (CLI, backtests, Dagster run config, exchange replies)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.models import parse_time
from xcoin_trading.timeframes import parse_utc

MOMENT = datetime(2024, 6, 14, 17, 31, 52, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["2024-06-14T17:31:52Z", "2024-06-14T17:31:52+00:00", "2024-06-14T23:01:52+05:30", "2024-06-14 17:31:52"],
)
def test_iso_text_with_any_offset_or_none_is_that_utc_moment(text):
    parsed = parse_utc(text, "at")
    assert parsed == MOMENT and parsed.tzinfo is UTC


def test_a_day_is_its_midnight_and_as_an_end_the_whole_day():
    assert parse_utc("2024-06-14", "start") == datetime(2024, 6, 14, tzinfo=UTC)
    assert parse_utc("2024-06-14", "end", end=True) == datetime(2024, 6, 15, tzinfo=UTC)
    assert parse_utc(date(2024, 6, 14), "end", end=True) == datetime(2024, 6, 15, tzinfo=UTC)


def test_datetimes_follow_the_same_rule():
    assert parse_utc(MOMENT.replace(tzinfo=None), "at") == MOMENT
    ist = timezone(timedelta(hours=5, minutes=30))
    assert parse_utc(MOMENT.astimezone(ist), "at") == MOMENT
    assert parse_utc(None, "at") is None


@pytest.mark.parametrize("text", ["yesterday", "", "2024-13-01", "14/06/2024"])
def test_unreadable_text_is_refused_naming_the_field(text):
    with pytest.raises(ValidationError) as err:
        parse_utc(text, "--at")
    assert err.value.field == "--at" and repr(text.strip()) in err.value.reason


def test_an_exchange_time_without_offset_is_utc_whatever_the_host_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert parse_time("2024-06-14T17:31:52") == MOMENT
    finally:
        monkeypatch.undo()
        time.tzset()
