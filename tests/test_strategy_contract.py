"""The strategy contract: built-ins, user files, and every way a strategy can break it."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data_file
from tests.fixtures.sma_spec import running_sma
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.strategy import (
    ACTIONS,
    StrategyError,
    compute_signals,
    load_strategy,
    normalize_candles,
    read_candles_file,
)
from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES
from xcoin_trading.strategy.contract import JIT_MIN_ROWS


@pytest.fixture(scope="module")
def btc_jan() -> pl.DataFrame:
    return read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet"))


def _candles(closes: list[float]) -> pl.DataFrame:
    c = np.asarray(closes, dtype=float)
    return pl.DataFrame(
        {
            "open_time": np.arange(len(c), dtype=np.int64) * 60_000 + 1_704_067_200_000,
            "open": c,
            "high": c * 1.001,
            "low": c * 0.999,
            "close": c,
            "volume": np.ones(len(c)),
        }
    )


def _user_strategy(tmp_path, body: str, name: str = "mine.py") -> str:
    path = tmp_path / name
    path.write_text("import polars as pl\n\n" + body)
    return str(path)


@pytest.mark.parametrize("name", BUILTIN_STRATEGIES)
def test_every_builtin_gives_one_valid_row_per_candle_with_entries(btc_jan, name):
    strategy = load_strategy(name)
    signals = compute_signals(strategy, btc_jan, strategy.resolve_params({}))
    assert signals.height == btc_jan.height
    counts = dict(signals.group_by("action").len().iter_rows())
    assert set(counts) <= set(ACTIONS)
    assert counts.get("LONG", 0) > 10 and counts.get("SHORT", 0) > 10
    entries = signals.filter(pl.col("action").is_in(["LONG", "SHORT"]))
    assert entries.get_column("stop_loss").null_count() == 0
    assert signals.filter(pl.col("action") == "HOLD").get_column("stop_loss").null_count() == counts["HOLD"]


# A live candle (a few hundred rows) runs the kernels as plain Python, a backtest compiled: both checked.
SIZES = pytest.mark.parametrize("rows", [JIT_MIN_ROWS - 1, None], ids=["interpreted", "compiled"])


@SIZES
def test_sma_crossover_signals_match_a_running_sum_loop(btc_jan, rows):
    btc_jan = btc_jan.head(rows) if rows else btc_jan
    fast, slow, sl_pct, tp_pct = 20, 50, 0.02, 0.04
    close = btc_jan.get_column("close").to_list()

    f, s = running_sma(close, fast), running_sma(close, slow)  # the spec's reference formulation
    expected = ["HOLD"] * len(close)
    for i in range(slow, len(close)):
        if f[i] > s[i] and f[i - 1] <= s[i - 1]:
            expected[i] = "LONG"
        elif f[i] < s[i] and f[i - 1] >= s[i - 1]:
            expected[i] = "SHORT"
    strategy = load_strategy("sma_crossover")
    got = compute_signals(strategy, btc_jan, strategy.resolve_params({"fast": fast, "slow": slow}))
    assert got.get_column("action").cast(pl.String).to_list() == expected
    longs = got.with_row_index().filter(pl.col("action") == "LONG")
    i = longs.item(0, "index")
    assert longs.item(0, "stop_loss") == close[i] * (1 - sl_pct)
    assert longs.item(0, "take_profit") == close[i] * (1 + tp_pct)


def test_long_only_mode_turns_short_signals_into_exits(btc_jan):
    strategy = load_strategy("sma_crossover")
    both = compute_signals(strategy, btc_jan, strategy.resolve_params({}))
    long_only = compute_signals(strategy, btc_jan, strategy.resolve_params({"mode": "long_only"}))
    assert (long_only.get_column("action") == "SHORT").sum() == 0
    assert ((both.get_column("action") == "SHORT") == (long_only.get_column("action") == "EXIT")).all()


def test_rsi_reversion_goes_long_when_rsi_climbs_back_above_oversold():
    # 30 flat-ish candles, a steep fall (RSI -> ~0), then a rise: the first candle whose RSI is
    # back above 30 is the LONG.
    closes = [100.0 + (i % 2) * 0.1 for i in range(30)] + [100 - 2 * i for i in range(1, 15)]
    closes += [closes[-1] + 3 * i for i in range(1, 10)]
    candles = _candles(closes)
    strategy = load_strategy("rsi_reversion")
    signals = compute_signals(strategy, candles, strategy.resolve_params({"mode": "long_only"}))
    # Plain Wilder RSI (alpha = 1/14, seeded by the first change, as polars' ewm adjust=False).
    gains, losses, rsi = None, None, [None]
    for a, b in zip(closes, closes[1:], strict=False):
        d = b - a
        g, lo = max(d, 0.0), max(-d, 0.0)
        gains = g if gains is None else gains + (g - gains) / 14
        losses = lo if losses is None else losses + (lo - losses) / 14
        rsi.append(100 * gains / (gains + losses))
    first_long = next(i for i in range(15, len(rsi)) if rsi[i - 1] < 30 <= rsi[i])
    actions = signals.get_column("action").to_list()
    assert actions.index("LONG") == first_long


def test_user_file_strategy_runs_with_its_own_defaults(tmp_path, btc_jan):
    path = _user_strategy(
        tmp_path,
        'DEFAULT_PARAMS = {"every": 100}\n\n'
        "def signals(candles, params):\n"
        "    i = pl.int_range(pl.len())\n"
        '    action = pl.when(i % params["every"] == 0).then(pl.lit("LONG")).otherwise(pl.lit("HOLD"))\n'
        '    return candles.select(action.alias("action"), (pl.col("close") * 0.99).alias("stop_loss"),\n'
        '                          pl.lit(None, dtype=pl.Float64).alias("take_profit"))\n',
    )
    strategy = load_strategy(path)
    assert strategy.code == "mine" and strategy.kind == "file" and strategy.source_sha256
    signals = compute_signals(strategy, btc_jan, strategy.resolve_params({"every": "200"}))
    assert (signals.get_column("action") == "LONG").sum() == math.ceil(btc_jan.height / 200)


def test_unknown_strategy_is_refused_with_the_builtin_names():
    with pytest.raises(NotFound, match=r"unknown strategy 'nope'.*sma_crossover"):
        load_strategy("nope")
    with pytest.raises(NotFound, match="does not exist"):
        load_strategy("/tmp/definitely/missing.py")


def test_file_without_signals_function_is_refused(tmp_path):
    with pytest.raises(StrategyError, match="does not define a function signals"):
        load_strategy(_user_strategy(tmp_path, "x = 1\n"))
    with pytest.raises(StrategyError, match="failed to load: SyntaxError"):
        load_strategy(_user_strategy(tmp_path, "def signals(:\n", "broken.py"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "    raise ZeroDivisionError('boom')\n",
            r"'bad' raised an exception \(its own report: \"ZeroDivisionError: boom at line \d+\"\)",
        ),
        ("    return {'action': []}\n", "must return a polars DataFrame, got dict"),
        (
            "    return candles.with_columns(pl.lit('HOLD').alias('action'))\n",
            r"returned no \['stop_loss', 'take_profit'\]",
        ),
        (
            "    return candles.head(10).with_columns(pl.lit('HOLD').alias('action'), pl.lit(None).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            r"returned 10 rows for \d+ candles",
        ),
        (
            "    return candles.with_columns(pl.lit('BUY').alias('action'), pl.lit(None).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            r"returned action 'BUY' at row 0; allowed: HOLD, LONG, SHORT, EXIT",
        ),
        (
            "    return candles.with_columns(pl.lit(None, dtype=pl.String).alias('action'), pl.lit(None).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            "returned a null action at row 0",
        ),
        (
            "    return candles.with_columns(pl.lit('LONG').alias('action'), pl.lit(float('nan')).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            "returned NaN or infinite stop_loss/take_profit on an entry row 0",
        ),
        (
            "    return candles.with_columns(pl.lit('LONG').alias('action'), (pl.col('close') * 1.01).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            "LONG at row 0 whose stop_loss is not below",
        ),
        (
            "    return candles.with_columns(pl.lit('SHORT').alias('action'), pl.lit(None).alias('stop_loss'),"
            " (pl.col('close') * 1.01).alias('take_profit'))\n",
            "SHORT at row 0 whose stop_loss is not above or take_profit not below",
        ),
        (
            "    return candles.with_columns(pl.lit(1).alias('action'), pl.lit(None).alias('stop_loss'),"
            " pl.lit(None).alias('take_profit'))\n",
            "action column must be strings",
        ),
    ],
)
@pytest.mark.parametrize("rows", [60, JIT_MIN_ROWS], ids=["interpreted", "compiled"])
def test_strategy_breaking_the_contract_gets_a_clear_error(tmp_path, body, message, rows):
    strategy = load_strategy(_user_strategy(tmp_path, "def signals(candles, params):\n" + body, "bad.py"))
    candles = _candles([100.0 + i for i in range(rows)])
    with pytest.raises(StrategyError, match=message):
        compute_signals(strategy, candles, {})


def test_levels_on_hold_rows_are_ignored_not_refused(tmp_path):
    strategy = load_strategy(
        _user_strategy(
            tmp_path,
            "def signals(candles, params):\n"
            "    return candles.with_columns(pl.lit('HOLD').alias('action'), pl.lit(float('nan')).alias('stop_loss'),"
            " (pl.col('close') * 5).alias('take_profit'))\n",
        )
    )
    signals = compute_signals(strategy, _candles([100.0] * 5), {})
    assert signals.get_column("stop_loss").null_count() == 5
    assert signals.get_column("take_profit").null_count() == 5


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"fast": 50, "slow": 20}, "params.fast", "must be below slow"),
        ({"speed": 3}, "params", "unknown parameter(s) ['speed']"),
        ({"fast": "ten"}, "params.fast", "must be int, got 'ten'"),
        ({"fast": 2.5}, "params.fast", "must be int"),
        ({"sl_pct": 1.5}, "params.sl_pct", "must be in (0, 1.0), got 1.5"),
        ({"mode": "sideways"}, "params.mode", "must be one of"),
    ],
)
def test_bad_builtin_params_name_the_parameter(params, field, reason):
    with pytest.raises(ValidationError) as err:
        load_strategy("sma_crossover").resolve_params(params)
    assert err.value.field == field and reason in err.value.reason


def test_datetime_candles_are_normalised_to_int_ms():
    frame = pl.DataFrame(
        {
            "open_time": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)],
            "open": [1, 2],
            "high": [2, 3],
            "low": [1, 2],
            "close": [2, 3],
            "volume": [0, 1],
        }
    )
    out = normalize_candles(frame)
    assert out.schema["open_time"] == pl.Int64 and out.schema["close"] == pl.Float64
    assert out.get_column("open_time").to_list() == [1_704_067_200_000, 1_704_067_260_000]


def test_a_naive_candle_time_is_utc_like_everywhere_else_on_the_platform():
    frame = _candles([100.0, 101.0]).with_columns(pl.from_epoch("open_time", time_unit="ms"))
    assert frame.schema["open_time"].time_zone is None
    out = normalize_candles(frame)
    assert out.get_column("open_time").to_list() == [1_704_067_200_000, 1_704_067_260_000]


def test_a_time_of_no_time_type_is_refused_naming_the_field():
    frame = _candles([100.0, 101.0]).with_columns(pl.col("open_time").cast(pl.Float64))
    with pytest.raises(ValidationError) as err:
        normalize_candles(frame, name="data mine.parquet")
    assert err.value.field == "data mine.parquet.open_time" and "Float64" in err.value.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.drop("low"), r"missing columns \['low'\]"),
        (lambda f: f.head(0), "is empty"),
        (lambda f: f.reverse(), "not strictly increasing"),
        (lambda f: f.with_columns(pl.lit(float("nan")).alias("close")), "NaN"),
        (lambda f: f.with_columns(pl.lit(-1.0).alias("low")), "<= 0"),
        (lambda f: f.with_columns(pl.col("open_time").cast(pl.String)), "open_time.*must be epoch"),
        (lambda f: f.with_columns((pl.col("low") * 2).alias("low")), "high/low do not bound"),
    ],
)
@pytest.mark.parametrize("rows", [3, JIT_MIN_ROWS], ids=["interpreted", "compiled"])
def test_bad_candles_are_refused_with_the_reason(change, reason, rows):
    with pytest.raises(ValidationError, match=reason):
        normalize_candles(change(_candles([100.0 + i for i in range(rows)])))
