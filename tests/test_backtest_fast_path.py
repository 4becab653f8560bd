"""The research fast path (a built-in's kernel-form signals, indicators shared across a sweep, a
candle frame checked once) trades exactly what the validated signal frame trades, and refuses
what the frame path refuses, on real BTCUSDT 1m candles."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data_file
from xcoin_trading.backtest import SimulationConfig, run_backtest, simulate
from xcoin_trading.backtest.engine import (
    KernelSignals,
    LevelsOutsideContract,
    SmaRule,
    kernel_rule,
    kernel_signals,
    normalized,
    run_kernel,
    slice_signals,
)
from xcoin_trading.backtest.inputs import rule_sums
from xcoin_trading.backtest.sweep import run_sweep
from xcoin_trading.backtest.walkforward import run_walk_forward
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import SPOT_MARKETS
from xcoin_trading.strategy import Strategy, StrategyError, compute_signals, load_strategy, read_candles_file
from xcoin_trading.strategy.builtin._common import IndicatorMemo

CFG = SimulationConfig(commission="0.0005")
SMA = load_strategy("sma_crossover")


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet")).head(30_000)


@pytest.mark.parametrize("mode", ["long_only", "long_short"])
@pytest.mark.parametrize(("fast", "slow"), [(3, 7), (20, 50), (45, 240)])
@pytest.mark.parametrize("shared", [False, True])
def test_kernel_form_signals_trade_exactly_what_the_validated_frame_trades(btc, mode, fast, slow, shared):
    params = SMA.resolve_params({"fast": fast, "slow": slow, "mode": mode, "sl_pct": 0.01, "tp_pct": 0.02})
    fast_path = kernel_signals(SMA, btc, params, CFG, IndicatorMemo() if shared else None)
    frame = compute_signals(SMA, btc, params)
    assert isinstance(fast_path, KernelSignals)
    codes = frame.get_column("action").to_physical().to_numpy()
    assert np.array_equal(fast_path.codes, codes)
    entry = np.isin(codes, (1, 2))
    assert fast_path.entries == entry.sum() > 0
    for got, col in ((fast_path.stop, "stop_loss"), (fast_path.take, "take_profit")):
        assert np.array_equal(got[0][entry], frame.get_column(col).to_numpy()[entry])  # same bits
    for start in (0, 1_234):
        a = run_kernel(btc.slice(start), slice_signals(fast_path, start), CFG)
        b = run_kernel(btc.slice(start), frame.slice(start), CFG)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2]) and np.array_equal(a[3][0], b[3][0])


CONFIGS = {
    "fees": CFG,
    "slipped, tp first, levels at the gap": SimulationConfig(
        commission="0.001", slippage="0.0005", slippage_range="0.1", intrabar="tp_first", gap_fill="level"
    ),
    "spot market, leveraged": SimulationConfig(
        commission="0.0004", leverage=3, risk_per_trade="0.05", market=SPOT_MARKETS["BTCUSDT"]
    ),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("mode", ["long_only", "long_short"])
@pytest.mark.parametrize(("fast", "slow"), [(2, 3), (20, 50), (45, 240)])
def test_the_walk_computing_the_signals_itself_trades_exactly_what_the_signal_arrays_trade(
    btc, config, mode, fast, slow
):
    """A single backtest of sma_crossover computes its signals inside the kernel's walk: the same
    trades, statistics and curves, bit for bit, as the kernel reading the signal pass's arrays;
    and a walk with more trades than its first trade buffer holds (2/3 trades every few candles)
    runs again with room for all of them. A sweep cell's walk reads the running sums its
    combinations share instead of accumulating them: the same bits again."""
    params = SMA.resolve_params({"fast": fast, "slow": slow, "mode": mode, "sl_pct": 0.01, "tp_pct": 0.02})
    rule = kernel_rule(SMA, params, config)
    assert isinstance(rule, SmaRule)
    arrays = kernel_signals(SMA, btc, params, config)
    sums = rule_sums(SMA, btc, params, IndicatorMemo())
    assert sums is not None
    for keep_curves in (True, False):
        b = run_kernel(btc, arrays, config, keep_curves=keep_curves)
        for a in (
            run_kernel(btc, rule, config, keep_curves=keep_curves),
            run_kernel(btc, rule, config, keep_curves=keep_curves, sma_sums=sums),
        ):
            assert a[0].shape[1] > 0 and np.array_equal(a[0], b[0], equal_nan=True)
            assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
            if keep_curves:
                assert all(np.array_equal(x, y) for x, y in zip(a[3], b[3], strict=True))
    if (fast, slow) == (2, 3):
        assert a[0].shape[1] > btc.height // 16 + 64  # more than the fused walk's first buffer
    # The backtest's equity frame, built on read from the trades, is the kernel's own curves.
    result = run_backtest(btc, SMA, params, config)
    curves = run_kernel(btc, arrays, config)[3]
    assert curves is not None
    for name, curve in zip(("equity", "drawdown", "drawdown_pct", "position"), curves, strict=True):
        assert np.array_equal(result.equity.get_column(name).to_numpy(), curve)


def test_every_sweep_row_equals_a_backtest_of_the_validated_frame(btc):
    grid = {"fast": [5, 20], "slow": [30, 120], "mode": ["long_only", "long_short"]}
    base = {"sl_pct": 0.01, "tp_pct": 0.02}
    ranking = run_sweep(btc, SMA, grid, CFG, base_params=base, oos_fraction=0.25)
    split = btc.height - 7_500
    for row in ranking.iter_rows(named=True):
        params = SMA.resolve_params(
            base | {k.removeprefix("param_"): v for k, v in row.items() if k.startswith("param_")}
        )
        alone = simulate(btc.head(split), compute_signals(SMA, btc.head(split), params), CFG).metrics
        held_out = simulate(btc.slice(split), compute_signals(SMA, btc, params).slice(split), CFG).metrics
        assert (row["netPnl"], row["sharpeRatio"], row["totalTrades"]) == (
            alone["netPnl"], alone["sharpeRatio"], alone["totalTrades"])  # fmt: skip
        assert (row["oos_netPnl"], row["oos_sharpeRatio"]) == (held_out["netPnl"], held_out["sharpeRatio"])


def test_a_level_the_contract_refuses_is_refused_on_the_fast_path_too(btc):
    # Short take profit at close × (1 - 1.5) < 0: the frame path names the row; so must every backtest.
    params = SMA.resolve_params({"fast": 5, "slow": 30, "sl_pct": 0.01, "tp_pct": 1.5})
    with pytest.raises(
        StrategyError, match=r"returned a stop_loss/take_profit <= 0 at row \d+"
    ) as frame_error:
        compute_signals(SMA, btc, params)
    rule = kernel_rule(SMA, params, CFG)
    assert rule is not None
    with pytest.raises(LevelsOutsideContract):  # the walk computing the signals sees it too
        run_kernel(btc, rule, CFG)
    with pytest.raises(StrategyError) as fast_error:
        run_backtest(btc, SMA, params, CFG)
    assert str(fast_error.value) == str(frame_error.value)
    with pytest.raises(StrategyError, match="stop_loss/take_profit <= 0"):
        run_sweep(btc, SMA, {"tp_pct": [0.02, 1.5]}, CFG, base_params={"fast": 5, "slow": 30})
    with pytest.raises(StrategyError, match="stop_loss/take_profit <= 0"):
        run_walk_forward(
            btc, SMA, {"tp_pct": [1.5, 2.0]}, CFG, base_params={"fast": 5, "slow": 30}, windows=2
        )


def test_only_the_builtin_function_itself_takes_the_fast_path(btc):
    """A Strategy calling something else under a built-in's name and kind runs through the contract."""

    def everything_long(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
        return candles.select(pl.lit("LONG").alias("action"), (pl.col("close") * 2).alias("stop_loss"),
                              pl.lit(None, pl.Float64).alias("take_profit"))  # fmt: skip

    impostor = Strategy("sma_crossover", "builtin", everything_long, SMA.default_params, None)
    params = impostor.resolve_params({})
    assert isinstance(kernel_signals(SMA, btc, SMA.resolve_params({}), CFG), KernelSignals)
    with pytest.raises(StrategyError, match="returned a LONG at row 0 whose stop_loss is not below"):
        kernel_signals(impostor, btc, params, CFG)
    # Levels rounded to the market's tick read every row's level: the frame path serves them.
    on_tick = SimulationConfig(market=SPOT_MARKETS["BTCUSDT"], levels_on_tick=True)
    assert isinstance(kernel_signals(SMA, btc, SMA.resolve_params({}), on_tick), pl.DataFrame)


def test_a_candle_frame_is_checked_once_per_frame_object(btc):
    raw = btc.with_columns(pl.col("open_time").cast(pl.Datetime("ms", "UTC")))
    once = normalized(raw)
    assert normalized(raw) is once and normalized(once) is once
    bad = raw.with_columns(
        pl.when(pl.col("close").cum_count() == 10).then(-1.0).otherwise(pl.col("close")).alias("close")
    )
    with pytest.raises(ValidationError, match=r"candles has prices <= 0 \(1 rows\)"):
        normalized(bad)
    with pytest.raises(ValidationError, match="candles is missing columns"):
        normalized(raw.drop("low"))


def test_indicators_beyond_the_memo_budget_are_computed_but_not_kept():
    memo = IndicatorMemo(budget=100)
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.zeros(10)

    first = memo.get("a", 80, compute)
    assert memo.get("a", 80, compute) is first and len(calls) == 1
    memo.get("b", 80, compute), memo.get("b", 80, compute)
    assert len(calls) == 3  # "b" would pass the budget: computed each time


def test_a_backtest_builds_its_frames_when_read_and_they_survive_pickling(btc):
    """The trade and equity frames are built on first read (the metrics are what a sweep of single
    backtests reads): built once, the same as the frame path's, and a pickled result (before or
    after the read) carries them."""
    import pickle

    params = SMA.resolve_params({"fast": 5, "slow": 30, "sl_pct": 0.01, "tp_pct": 0.02})
    result = run_backtest(btc, SMA, params, CFG)
    copy = pickle.loads(pickle.dumps(result))  # before any read
    by_frame = simulate(btc, compute_signals(SMA, btc, params), CFG)
    assert result.trades is result.trades and result.equity is result.equity
    for r in (result, copy, pickle.loads(pickle.dumps(result))):
        assert r.trades.equals(by_frame.trades) and r.equity.equals(by_frame.equity)
        assert r.metrics == by_frame.metrics
