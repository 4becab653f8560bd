"""Strategy validation on upload: fresh candles each time, look-ahead caught, broken strategies refused
with the reason."""

from __future__ import annotations

import polars as pl
import pytest

from tests.fixtures.sandbox import (
    FAST,
    GOOD,
)
from xcoin_trading.strategy.sandbox import run_sandboxed
from xcoin_trading.strategy.validation import sample_candles, validate_strategy


def test_validation_candles_are_fresh_each_time():
    a, b = sample_candles(), sample_candles()
    assert a["open_time"][0] != b["open_time"][0] and a["close"][0] != b["close"][0]
    for frame in (a, b):
        assert 500 <= frame.height < 800
        assert (frame["high"] >= frame[["open", "close"]].max_horizontal()).all()
        assert (frame["low"] <= frame[["open", "close"]].min_horizontal()).all()
        assert frame["close"].min() > 500 and frame["close"].max() < 300_000


def test_code_that_behaves_only_on_the_old_fixed_validation_candles_is_caught():
    # Honest on the old fixed sample (first open time 28,400,000 min, 600/250/420 rows); anywhere else
    # it goes LONG with its stop above the price, which live would place on the exchange.
    cheat = GOOD.replace(
        '(pl.col("close") * 0.98).alias("stop_loss")',
        '(pl.col("close") * (0.98 if sample else 1.05)).alias("stop_loss")',
    ).replace(
        'up = pl.col("close") > pl.col("close").rolling_mean(params["n"])',
        'sample = candles["open_time"][0] == 28_400_000 * 60_000 or candles.height in (600, 250, 420)\n'
        '    up = pl.col("close") > pl.col("close").rolling_mean(params["n"])',
    )
    old_sample = sample_candles(600, seed=7).with_columns(open_time=(pl.int_range(600) + 28_400_000) * 60_000)
    assert run_sandboxed("chameleon", cheat, old_sample, {}, FAST).signals.height == 600  # fine there
    report = validate_strategy("chameleon", cheat, {})
    assert report.status == "INVALID"
    assert any("stop_loss is not below" in e for e in report.errors), report.errors


def test_validation_accepts_an_honest_strategy():
    report = validate_strategy("honest", GOOD, {})
    assert report.ok, report.errors


def test_validation_catches_a_strategy_that_looks_at_the_next_candle():
    cheat = GOOD.replace(
        '(pl.col("close") * 1.04).alias("take_profit")',
        '(pl.col("close").shift(-1) * 0 + pl.col("close") * 1.04).alias("take_profit")',
    )
    report = validate_strategy("cheat", cheat, {})
    assert report.status == "INVALID"
    assert any("looks ahead" in e for e in report.errors)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def signals(c, p) return 1", "does not compile"),
        ("import polars as pl\ndef signals(c, p):\n    return c\n", "column"),
        (
            "import polars as pl\ndef signals(c, p):\n    return c.head(3).select(pl.lit('HOLD').alias('action'), pl.lit(None).alias('stop_loss'), pl.lit(None).alias('take_profit'))\n",
            "row",
        ),
        ("x = 1\n", "does not define a function signals"),
        (
            "import polars as pl\ndef signals(c, p):\n    return c.with_columns(action=pl.lit('LONG'), stop_loss=pl.lit(float('nan')), take_profit=pl.lit(None))\n",
            "NaN",
        ),
    ],
)
def test_validation_rejects_broken_strategies_with_the_reason(source, message):
    report = validate_strategy("broken", source, {})
    assert report.status == "INVALID"
    assert message in " ".join(report.errors)
