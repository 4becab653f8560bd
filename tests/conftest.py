"""Shared test setup. Fixture modules live in tests/fixtures/ and are all loaded here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_data_file(name: str) -> Path:
    """A real candle file from ../shared/data, or skip with the reason (never in CI)."""
    path = SHARED_DATA / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing: CI must have ../shared/data beside the clone")
        pytest.skip(f"real candles not available: {path} is absent")
    return path
