"""Shared test setup. Fixture modules live in tests/fixtures/ and are all loaded here."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def market_options(symbol: str, resolution: str, start: str, end: str) -> list[str]:
    """The CLI's market and range options, as `xcoin data import` and `xcoin backtest run` take them."""
    return ["--symbol", symbol, "--resolution", resolution, "--start", start, "--end", end]


def utc_day(day: str) -> datetime:
    """Midnight UTC of a YYYY-MM-DD day."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def shared_data_file(name: str) -> Path:
    """A real candle file from ../shared/data, or skip with the reason (never in CI)."""
    path = SHARED_DATA / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing: CI must have ../shared/data beside the clone")
        pytest.skip(f"real candles not available: {path} is absent")
    return path
