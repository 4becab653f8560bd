"""What the lake holds, for defaults and for reporting it elsewhere: the latest run of consecutive
days of one symbol × resolution, and every day file with its modification time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import NotFound
from xcoin_trading.marketdata.lake import candles_root, list_days


def latest_days(symbol: str, resolution: str, settings: Settings | None = None) -> tuple[str, str]:
    """(first, last) day of the newest run of consecutive days the lake holds (a gap ends it)."""
    days = list_days(symbol, resolution, settings)
    if not days:
        raise NotFound(
            f"the lake has no {symbol} {resolution} candles (run `xcoin demo`, `xcoin data backfill` "
            "or `xcoin data import` first, or give start and end)"
        )
    first = days[-1]
    for day in reversed(days[:-1]):
        if date.fromisoformat(first) - date.fromisoformat(day) != timedelta(days=1):
            break
        first = day
    return first, days[-1]


@dataclass(frozen=True)
class DayFile:
    symbol: str
    resolution: str
    day: str
    mtime_ns: int


def day_files(settings: Settings | None = None) -> list[DayFile]:
    """Every stored candle day (from the paths and file times only: cheap for thousands of days)."""
    root = candles_root(settings or get_settings())
    out = []
    for path in root.glob("symbol=*/resolution=*/date=*.parquet"):
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:  # replaced between glob and stat
            continue
        out.append(
            DayFile(
                symbol=path.parent.parent.name.removeprefix("symbol="),
                resolution=path.parent.name.removeprefix("resolution="),
                day=path.name.removeprefix("date=").removesuffix(".parquet"),
                mtime_ns=mtime,
            )
        )
    return sorted(out, key=lambda f: (f.symbol, f.resolution, f.day))
