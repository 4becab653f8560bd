"""Robust optimisation: walk-forward windows, the held-out part of a sweep, look-ahead detection
and grid-edge warnings, on real BTCUSDT 1m candles."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data_file
from xcoin_trading.backtest import SimulationConfig, run_backtest, simulate
from xcoin_trading.backtest.sweep import edge_warnings, run_sweep
from xcoin_trading.backtest.walkforward import (
    LookaheadError,
    make_windows,
    run_walk_forward,
    train_windows,
)
from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy import Strategy, compute_signals, load_strategy, read_candles_file

GRID = {"fast": [5, 10, 20], "slow": [30, 60, 120]}
BASE = {"sl_pct": 0.01, "tp_pct": 0.02}
CFG = SimulationConfig(commission="0.0005")


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet")).head(20_000)


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize(("n", "windows", "ratio"), [(20_000, 10, 3.0), (1_003, 4, 1.5), (100, 1, 0.5)])
def test_windows_tile_the_end_and_train_always_ends_where_its_test_starts(n, windows, ratio, anchored):
    plan = make_windows(n, windows, ratio, anchored=anchored)
    assert len(plan) == windows and plan[-1].test[1] == n
    for a, b in zip(plan, plan[1:], strict=False):
        assert a.test[1] == b.test[0]  # contiguous, never overlapping
    for w in plan:
        assert w.train[1] == w.test[0] and w.train[0] < w.train[1]  # no test candle in training
        assert (
            w.train[0] == 0
            if anchored
            else (w.train[1] - w.train[0])
            == pytest.approx(ratio * (plan[0].test[1] - plan[0].test[0]), abs=1)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"windows": 0}, "windows must be in [1, 100]"), ({"train_ratio": 0}, "train_ratio must be > 0"),
     ({"windows": 60, "train_ratio": 3.0}, "too few candles")],
)  # fmt: skip
def test_bad_window_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_windows(100, **({"windows": 10, "train_ratio": 3.0} | kwargs))


def test_training_never_sees_its_test_candles(btc):
    """Scrambling every candle from a window's test start onwards leaves that window's training
    (its whole ranking) unchanged: the train cells cannot have read them."""
    strategy = load_strategy("sma_crossover")
    plan = make_windows(btc.height, 5, 2.0)
    honest = train_windows(btc, strategy, GRID, CFG, plan, base_params=BASE)
    for w in (plan[1], plan[4]):
        cut = w.test[0]
        rng = np.random.default_rng(w.index)
        noise = rng.uniform(0.5, 1.5, btc.height - cut)
        scrambled = btc.with_columns(
            pl.concat([pl.col(c).head(cut), (pl.col(c).tail(btc.height - cut) * pl.Series(noise))])
            for c in ("open", "high", "low", "close")
        )
        [again] = train_windows(scrambled, strategy, GRID, CFG, [w], base_params=BASE)
        assert again.ranking.equals(honest[w.index - 1].ranking)
        assert again.params == honest[w.index - 1].params


def _peeking(shift: int) -> Strategy:
    """Long when the close `shift` candles ahead is higher: perfect foresight."""

    def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
        ahead = pl.col("close").shift(-shift)
        action = pl.when(ahead > pl.col("close") * 1.0005).then(pl.lit("LONG")).when(
            ahead < pl.col("close")).then(pl.lit("EXIT")).otherwise(pl.lit("HOLD"))  # fmt: skip
        return candles.select(action.alias("action"), pl.lit(None, pl.Float64).alias("stop_loss"),
                              pl.lit(None, pl.Float64).alias("take_profit"))  # fmt: skip

    return Strategy("peeker", "builtin", signals, {"k": 1})


def test_a_strategy_that_peeks_is_caught(btc):
    peeker = _peeking(3)
    all_in = replace(CFG, risk_per_trade=Decimal(1))  # no stop: risk 100 % is all-in
    # In sample it looks like a money machine...
    assert run_backtest(btc, peeker, {}, all_in).metrics["totalPnlPct"] > 50
    # ...and the walk-forward refuses it, naming the candle whose signal changed.
    with pytest.raises(
        LookaheadError, match=r"peeker looks ahead: its signal at 2024-01-\d\d .* \(window 1\)"
    ):
        run_walk_forward(btc, peeker, {"k": [1, 2]}, all_in, windows=4)


def test_walk_forward_stitches_each_windows_chosen_set_traded_alone(btc):
    strategy = load_strategy("sma_crossover")
    wf = run_walk_forward(btc, strategy, GRID, CFG, base_params=BASE, windows=4, train_ratio=2.0)
    plan = make_windows(btc.height, 4, 2.0)
    assert wf.windows.height == 4 and wf.oos.equity.height == btc.height - plan[0].test[0]
    capital = 10_000.0
    all_trades = []
    for w, row, choice in zip(plan, wf.windows.iter_rows(named=True), wf.choices, strict=True):
        # The chosen set is the in-sample best of that window's own ranking...
        best = choice.ranking.row(0, named=True)
        assert {k: choice.params[k] for k in GRID} == {
            k.removeprefix("param_"): int(v) for k, v in best.items() if k.startswith("param_")
        }
        # ...and its test result is a plain backtest of the test candles (signals warmed up on the
        # train candles), starting from the capital the previous window ended with.
        span = btc.slice(w.train[0], w.test[1] - w.train[0])
        signals = compute_signals(strategy, span, choice.params).slice(w.test[0] - w.train[0])
        alone = simulate(span.slice(w.test[0] - w.train[0]), signals, replace(CFG, initial_capital=capital))
        assert row["net_pnl"] == pytest.approx(alone.metrics["netPnl"], rel=1e-12, abs=1e-9)
        capital = alone.metrics["finalCapital"]
        all_trades.append(alone.trades.with_columns(pl.col("entry_index") + (w.test[0] - plan[0].test[0])))
    assert wf.oos.metrics["finalCapital"] == pytest.approx(capital, rel=1e-12)
    assert wf.oos.equity.get_column("equity")[-1] == pytest.approx(capital, rel=1e-12)
    stitched = pl.concat(all_trades)
    assert wf.oos.trades.get_column("entry_index").to_list() == stitched.get_column("entry_index").to_list()
    assert wf.oos.trades.get_column("pnl").to_list() == pytest.approx(stitched.get_column("pnl").to_list())


def test_a_sweep_holds_out_its_last_part_and_ranks_on_the_rest(btc):
    strategy = load_strategy("sma_crossover")
    ranking = run_sweep(btc, strategy, GRID, CFG, base_params=BASE, oos_fraction=0.25)
    split = btc.height - 5_000
    best = ranking.row(0, named=True)
    params = strategy.resolve_params(BASE | {"fast": best["param_fast"], "slow": best["param_slow"]})
    in_sample = run_backtest(btc.head(split), strategy, params, CFG).metrics
    assert best["sharpeRatio"] == pytest.approx(in_sample["sharpeRatio"], rel=1e-12)
    # Out of sample: the held-out candles traded alone, indicators warmed up on the candles before.
    signals = compute_signals(strategy, btc, params).slice(split)
    held_out = simulate(btc.slice(split), signals, CFG).metrics
    assert best["oos_sharpeRatio"] == pytest.approx(held_out["sharpeRatio"], rel=1e-9)
    assert best["oos_netPnl"] == pytest.approx(held_out["netPnl"], rel=1e-9, abs=1e-9)


def test_best_set_on_the_grid_edge_is_warned_about():
    grid = {"fast": [5, 10, 20], "slow": [30, 60], "sl_pct": ["0.01", "0.02", "0.03"]}
    assert edge_warnings(grid, {"fast": 10, "slow": 60, "sl_pct": "0.02"}) == []  # slow has 2 values only
    assert edge_warnings(grid, {"fast": 5, "slow": 30, "sl_pct": "0.03"}) == [
        "best fast=5 is the grid's lowest value: widen the grid below it",
        "best sl_pct=0.03 is the grid's highest value: widen the grid above it",
    ]
