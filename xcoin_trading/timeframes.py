"""Candle resolutions, UTC time helpers and interval keys (`2024-01-01T10:05:00Z_5m`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from xcoin_trading.errors import ValidationError

MINUTE_MS = 60_000

# Every interval CoinDCX serves; months are calendar months and have no fixed length.
RESOLUTION_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
    "3d": 3 * 1440 * MINUTE_MS,
    "1w": 7 * 1440 * MINUTE_MS,
    "1M": 30 * 1440 * MINUTE_MS,  # nominal, for rate/lookback arithmetic only
}
EXCHANGE_INTERVALS = tuple(RESOLUTION_MS)
# What the platform trades and stores in the lake.
TRADED_RESOLUTIONS = ("1m", "5m", "15m", "1h", "4h", "1d")
DAY_MS = 86_400_000


def resolution_ms(resolution: str) -> int:
    try:
        return RESOLUTION_MS[resolution]
    except KeyError:
        raise ValidationError(
            "resolution", f"must be one of {', '.join(EXCHANGE_INTERVALS)}, got {resolution!r}"
        ) from None


def to_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValidationError("timestamp", f"must be timezone-aware UTC, got naive {ts.isoformat()}")
    return int(ts.timestamp() * 1000)


def parse_utc(value: str | date | datetime | None, field: str, *, end: bool = False) -> datetime | None:
    """The one reading of a time given as text: ISO (`2024-01-01T10:05:00Z`, any offset, or none,
    which means UTC: the platform's times are UTC) or a day `YYYY-MM-DD` (its midnight; as `end`,
    the next one, so the whole day counts). Dates and datetimes pass through the same rule.
    None → None; anything else unreadable raises naming `field`."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC) + timedelta(days=1 if end else 0)
    else:
        text = str(value).strip()
        try:
            if len(text) == 10:
                return parse_utc(date.fromisoformat(text), field, end=end)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                field, f"must be YYYY-MM-DD or an ISO datetime such as 2024-01-01T10:05:00Z, got {text!r}"
            ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def floor_ms(ms: int, resolution: str) -> int:
    """Open time of the candle containing `ms` (UTC-aligned; weeks start Monday as on exchanges)."""
    step = resolution_ms(resolution)
    if resolution == "1w":
        monday0 = 4 * DAY_MS  # 1970-01-05 was a Monday
        return ms - ((ms - monday0) % step)
    if resolution == "1M":
        d = from_ms(ms)
        return to_ms(datetime(d.year, d.month, 1, tzinfo=UTC))
    return ms - (ms % step)


def last_closed_open_ms(now_ms: int, resolution: str) -> int:
    """Open time of the most recent candle that has fully closed at `now_ms`."""
    return floor_ms(now_ms, resolution) - resolution_ms(resolution)


def interval_key(close_time: datetime, resolution: str) -> str:
    """Key of one candle close, e.g. `2024-01-01T10:05:00Z_5m` (the close time, UTC)."""
    resolution_ms(resolution)
    return close_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + f"_{resolution}"


def parse_interval_key(key: str) -> tuple[datetime, str]:
    try:
        stamp, resolution = key.rsplit("_", 1)
        resolution_ms(resolution)
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC), resolution
    except ValueError:
        raise ValidationError(
            "interval_key", f"must look like 2024-01-01T10:05:00Z_5m, got {key!r}"
        ) from None


def day_bounds_ms(day: str) -> tuple[int, int]:
    """[start, end) in ms of a UTC day given as YYYY-MM-DD."""
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError("date", f"must be YYYY-MM-DD, got {day!r}") from None
    return to_ms(start), to_ms(start + timedelta(days=1))
