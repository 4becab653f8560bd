"""Backtests launched through Dagster (`dg.materialize` with Launchpad-style config)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from xcoin_pipelines.defs.backtest.assets import RUN_TAGS, backtest_result, param_sweep
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.backtest import SimulationConfig, run_backtest
from xcoin_trading.backtest.results import list_results
from xcoin_trading.exchange.markets import SPOT_MARKETS
from xcoin_trading.marketdata.lake import load_candles


def _materialize(instance, asset, config: dict | None = None):
    """As the Launchpad does: plain YAML-shaped run config (or none: the Materialize button)."""
    op = "backtests__" + asset.key.path[-1]
    return dg.materialize(
        [asset],
        instance=instance,
        resources={"xcoin": XcoinSettingsResource()},
        run_config={"ops": {op: {"config": config}}} if config is not None else None,
        raise_on_error=False,
    )


def test_backtest_launched_with_config_stores_result_trades_equity_and_report(lake_btc):
    config = {
        "strategy": {"sma_crossover": {"fast": 10, "slow": 40}}, "symbol": "BTCUSDT", "resolution": "1m",
        "start": "2024-01-02", "end": "2024-01-04", "initial_capital": 5000, "commission": 0.0005,
    }  # fmt: skip
    with dg.instance_for_test() as instance:
        res = _materialize(instance, backtest_result, config)
        assert res.success
        [mat] = res.get_asset_materialization_events()
        meta = mat.materialization.metadata
        tags = instance.get_run_by_id(res.run_id).tags

    [row] = list_results("sma_crossover")
    assert {k: tags[k] for k in RUN_TAGS} == {
        "xcoin/strategy": "sma_crossover", "xcoin/symbol": "BTCUSDT", "xcoin/resolution": "1m",
        "xcoin/range": "2024-01-02..2024-01-04",
    }  # fmt: skip
    assert meta["backtest_id"].value == row["id"]
    assert meta["inputs"].value["params"] == {
        "fast": 10, "slow": 40, "sl_pct": 0.02, "tp_pct": 0.04, "mode": "long_short"
    }  # fmt: skip
    summary = meta["summary"].value
    assert "![equity and drawdown](data:image/png;base64,iVBOR" in summary
    assert f"| trades | {row['metrics']['totalTrades']:,} |" in summary
    assert f"| Sharpe | {row['metrics']['sharpeRatio']:,.2f} |" in summary
    assert Path(meta["report_path"].value).read_text().count("<tr>") > 10
    assert meta["report"].value == f"file://{meta['report_path'].value}"
    assert row["config"]["symbol"] == "BTCUSDT" and row["config"]["key"].startswith("sma_crossover-")
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
    # the metadata shows the same figure, rounded for reading
    assert meta["sharpeRatio"].value == round(direct.metrics["sharpeRatio"], 2)
    assert meta["winRate"].value == round(direct.metrics["winRate"], 1)


def test_materialize_without_config_backtests_the_newest_days_the_lake_holds(lake_btc):
    """The one-click path: every default works on what the lake holds (the demo writes BTCUSDT 1m)."""
    with dg.instance_for_test() as instance:
        res = _materialize(instance, backtest_result)
        assert res.success
        meta = res.get_asset_materialization_events()[0].materialization.metadata
        assert instance.get_run_by_id(res.run_id).tags["xcoin/range"] == "2024-01-02..2024-01-04"
    inputs = meta["inputs"].value
    assert (inputs["strategy"], inputs["symbol"], inputs["resolution"]) == ("sma_crossover", "BTCUSDT", "1m")
    assert (inputs["start"], inputs["end"]) == ("2024-01-02", "2024-01-04")
    [row] = list_results("sma_crossover")
    assert row["metrics"]["candles"] == 3 * 1440


def _launchpad_errors(asset, config: dict) -> list[str]:
    """What the Launchpad shows before launch: Dagster's own validation of the run config schema."""
    from dagster._config import validate_config

    job = dg.define_asset_job("launchpad", selection=[asset]).resolve(
        asset_graph=dg.Definitions(
            assets=[asset], resources={"xcoin": XcoinSettingsResource()}
        ).resolve_asset_graph()
    )
    op = "backtests__" + asset.key.path[-1]
    result = validate_config(job.run_config_schema.config_type, {"ops": {op: {"config": config}}})
    return [e.message for e in result.errors or []]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": {"sma_crossover": {"fats": 20}}}, 'unexpected config entry "fats"'),
        ({"strategy": {"sma_crossover": {"fast": 20.5}}}, "strategy:sma_crossover:fast"),
        ({"strategy": {"rsi_reversion": {"mode": "both"}}}, "rsi_reversion:mode not in enum"),
        ({"strategy": "sma_crossover"}, "strategy"),
        ({"strategy": {"nope": {}}}, "nope"),
        ({"resolution": "2m"}, "resolution not in enum"),
        ({"intrabar": "5m"}, "intrabar not in enum"),
    ],
)
def test_launchpad_refuses_bad_config_before_the_run_starts(config, message):
    errors = _launchpad_errors(backtest_result, config)
    assert errors and any(message in e for e in errors), errors


def test_launchpad_accepts_the_defaults_and_every_builtin_with_its_parameters():
    from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES
    from xcoin_trading.strategy.loader import load_strategy

    assert _launchpad_errors(backtest_result, {}) == []
    for name in BUILTIN_STRATEGIES:
        # every built-in parameter is a typed field whose default is the built-in's own
        params = load_strategy(name).default_params
        assert _launchpad_errors(backtest_result, {"strategy": {name: params}}) == []
        assert _launchpad_errors(backtest_result, {"strategy": {name: {**params, "bogus": 1}}}) != []
    assert _launchpad_errors(backtest_result, {"strategy": {"stored": {"code": "demo-btc-sma-1m"}}}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": {"stored": {"code": "nope"}}}, "unknown strategy 'nope'"),
        ({"strategy": {"stored": {"code": " "}}}, "strategy.stored.code must name a stored strategy"),
        ({"strategy": {"sma_crossover": {"fast": 60}}}, "params.fast must be below slow (50)"),
        ({"symbol": ""}, "symbol must name a market"),
        ({"start": "2024-01-10", "end": "2024-01-03"}, "start must be before end"),
        ({"end": "2024-01-09"}, "no BTCUSDT 1m candles for 5 day(s): 2024-01-05..2024-01-09"),
        ({"symbol": "ETHUSDT", "start": ""}, "the lake has no ETHUSDT 1m candles"),
    ],
)
def test_bad_backtest_config_fails_the_run_with_the_reason_and_stores_nothing(lake_btc, change, message):
    base = dict(symbol="BTCUSDT", resolution="1m", start="2024-01-02", end="2024-01-04")
    with dg.instance_for_test() as instance:
        res = _materialize(instance, backtest_result, base | change)
        assert not res.success
        failure = next(e for e in res.all_events if e.is_step_failure)
        assert message in failure.step_failure_data.user_failure_data.description
    assert list_results() == []


def test_sweep_asset_ranks_the_grid_and_publishes_the_table(lake_btc):
    config = {
        "symbol": "BTCUSDT", "resolution": "1m", "start": "2024-01-02", "end": "2024-01-04",
        "grid": "fast=5,10;slow=30,60;tp_pct=0.01,0.02", "metric": "netPnl",
    }  # fmt: skip
    with dg.instance_for_test() as instance:
        res = _materialize(instance, param_sweep, config)
        assert res.success
        meta = res.get_asset_materialization_events()[0].materialization.metadata
    records = meta["ranking"].value.records
    assert len(records) == 8 and meta["combinations"].value == 8
    pnl = [r.data["netPnl"] for r in records]
    assert pnl == sorted(pnl, reverse=True)
    # floats are rounded for reading: at most 4 decimals in every cell
    floats = [v for r in records for v in r.data.values() if isinstance(v, float)]
    assert floats and all(v == round(v, 4) for v in floats)
    ranking = pl.read_parquet(meta["ranking_parquet"].value)
    assert ranking.height == 8 and meta["best_params"].value == {
        k.removeprefix("param_"): v for k, v in ranking.row(0, named=True).items() if k.startswith("param_")
    }
