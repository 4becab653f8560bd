"""Backtests launched through Dagster (`dg.materialize` with Launchpad-style config)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from tests.conftest import shared_data_file
from xcoin_pipelines.defs.backtests.assets import BacktestConfig, SweepConfig, backtest_result, param_sweep
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.backtest import SimulationConfig, run_backtest
from xcoin_trading.backtest.results import list_results
from xcoin_trading.exchange.markets import SPOT_MARKETS
from xcoin_trading.marketdata.lake import load_candles


@pytest.fixture()
def lake_btc():
    from xcoin_trading.marketdata.importer import import_candles

    import_candles(
        shared_data_file("BTCUSDT-1m-2024-01.parquet"), "BTCUSDT", "1m",
        start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 5, tzinfo=UTC),
    )  # fmt: skip


def _materialize(instance, asset, config, partition: str | None = None):
    op = "backtests__" + asset.key.path[-1]
    return dg.materialize(
        [asset],
        instance=instance,
        partition_key=partition,
        resources={"xcoin": XcoinSettingsResource()},
        run_config=dg.RunConfig(ops={op: config}),
        raise_on_error=False,
    )


def test_backtest_launched_with_config_stores_result_trades_equity_and_report(lake_btc):
    config = BacktestConfig(
        strategy="sma_crossover", symbol="BTCUSDT", resolution="1m", start="2024-01-02", end="2024-01-04",
        params={"fast": 10, "slow": 40}, initial_capital=5000, commission=0.0005,
    )  # fmt: skip
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("backtest_runs", ["btc-early-jan"])
        res = _materialize(instance, backtest_result, config, "btc-early-jan")
        assert res.success
        [mat] = res.get_asset_materialization_events()
        meta = mat.materialization.metadata
        assert mat.partition == "btc-early-jan"

    [row] = list_results("sma_crossover")
    assert meta["backtest_id"].value == row["id"]
    assert meta["equity_chart"].value.startswith("![equity and drawdown](data:image/png;base64,iVBOR")
    assert Path(meta["report"].value).read_text().count("<tr>") > 10
    assert row["config"]["symbol"] == "BTCUSDT" and row["config"]["key"].startswith("btc-early-jan-")
    trades = pl.read_parquet(row["artifacts"]["trades"])
    equity = pl.read_parquet(row["artifacts"]["equity"])
    assert (
        equity.height == 3 * 1440
        and trades.height == meta["totalTrades"].value == row["metrics"]["totalTrades"]
    )

    # The same backtest run directly on the lake's candles gives the same figures.
    candles = load_candles(
        "BTCUSDT", "1m", datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC)
    )
    direct = run_backtest(
        candles, "sma_crossover", {"fast": 10, "slow": 40},
        SimulationConfig(initial_capital=5000, commission="0.0005", market=SPOT_MARKETS["BTCUSDT"]),
    )  # fmt: skip
    assert row["metrics"]["netPnl"] == pytest.approx(direct.metrics["netPnl"], rel=1e-12)
    assert meta["sharpeRatio"].value == pytest.approx(direct.metrics["sharpeRatio"], rel=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "nope"}, "unknown strategy 'nope'"),
        ({"start": "2024-01-10", "end": "2024-01-03"}, "start must be before end"),
        ({"end": "2024-01-09"}, "no BTCUSDT 1m candles for 5 day(s): 2024-01-05..2024-01-09"),
    ],
)
def test_bad_backtest_config_fails_the_run_with_the_reason_and_stores_nothing(lake_btc, change, message):
    base = dict(
        strategy="sma_crossover", symbol="BTCUSDT", resolution="1m", start="2024-01-02", end="2024-01-04"
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("backtest_runs", ["bad"])
        res = _materialize(instance, backtest_result, BacktestConfig(**(base | change)), "bad")
        assert not res.success
        failure = next(e for e in res.all_events if e.is_step_failure)
        assert message in failure.step_failure_data.user_failure_data.description
    assert list_results() == []


def test_sweep_asset_ranks_the_grid_and_publishes_the_table(lake_btc):
    config = SweepConfig(
        strategy="sma_crossover", symbol="BTCUSDT", resolution="1m", start="2024-01-02", end="2024-01-04",
        grid="fast=5,10;slow=30,60;tp_pct=0.01,0.02", metric="netPnl",
    )  # fmt: skip
    with dg.instance_for_test() as instance:
        res = _materialize(instance, param_sweep, config)
        assert res.success
        meta = res.get_asset_materialization_events()[0].materialization.metadata
    records = meta["ranking"].value.records
    assert len(records) == 8 and meta["combinations"].value == 8
    pnl = [r.data["netPnl"] for r in records]
    assert pnl == sorted(pnl, reverse=True)
    ranking = pl.read_parquet(meta["ranking_parquet"].value)
    assert ranking.height == 8 and meta["best_params"].value == {
        k.removeprefix("param_"): v for k, v in ranking.row(0, named=True).items() if k.startswith("param_")
    }
