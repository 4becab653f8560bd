"""Research assets in Dagster: the walk-forward as a plan, a partition per window, and the stitched
out-of-sample result; the held-out sweep. Materialized as the UI would, on the embedded lake."""

from __future__ import annotations

import dagster as dg
import pytest

from xcoin_pipelines.defs.research.assets import (
    SweepOosConfig,
    WalkForwardConfig,
    sweep_out_of_sample,
    walk_forward_oos,
    walk_forward_plan,
    walk_forward_window,
)
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.backtest.results import list_results

INPUTS = {"strategy": "sma_crossover", "symbol": "BTCUSDT", "resolution": "1m", "start": "2024-01-02",
          "end": "2024-01-04", "grid": "fast=5,10;slow=30,60", "params": {"sl_pct": 0.01, "tp_pct": 0.02}}  # fmt: skip


def _run(instance, asset, config=None, partition=None):
    ops = {"research__" + asset.key.path[-1]: config} if config is not None else {}
    return dg.materialize([asset], instance=instance, partition_key=partition, raise_on_error=False,
                          resources={"xcoin": XcoinSettingsResource()}, run_config=dg.RunConfig(ops=ops))  # fmt: skip


def _meta(res):
    [mat] = res.get_asset_materialization_events()
    return mat.materialization.metadata


def test_walk_forward_runs_a_partition_per_window_then_stitches_them(lake_btc):
    with dg.instance_for_test() as instance:
        res = _run(instance, walk_forward_plan, WalkForwardConfig(**INPUTS, windows=3, train_ratio=2.0))
        assert res.success
        assert instance.get_dynamic_partitions("research_windows") == ["w01", "w02", "w03"]
        early = _run(instance, walk_forward_oos)
        assert not early.success  # no window trained yet: the reason is named
        assert "windows not trained yet: w01, w02, w03" in str(
            early.get_step_failure_events()[0].event_specific_data.error
        )
        for key in ("w01", "w02", "w03"):
            res = _run(instance, walk_forward_window, partition=key)
            assert res.success
            meta = _meta(res)
            assert set(meta["chosen_params"].value) >= {"fast", "slow"} and "→" in meta["test"].value
        res = _run(instance, walk_forward_oos)
        assert res.success, res.get_step_failure_events()
        meta = _meta(res)
    [row] = list_results()
    assert row["config"]["kind"] == "walk_forward" and meta["walk_forward_id"].value == row["id"]
    assert len(meta["windows"].value.records) == 3
    md = meta["tearsheet"].value
    assert (
        "vs buy & hold" in md
        and "| Metric | Strategy | Buy & hold |" in md
        and "data:image/png;base64," in md
    )
    assert meta["oos_net_pnl"].value == pytest.approx(row["metrics"]["netPnl"])


def test_sweep_with_a_held_out_part_is_stored_with_its_ranking(lake_btc):
    with dg.instance_for_test() as instance:
        res = _run(
            instance, sweep_out_of_sample, SweepOosConfig(**INPUTS, metric="netPnl", oos_fraction=0.25)
        )
        assert res.success
        meta = _meta(res)
        bad = _run(instance, sweep_out_of_sample, SweepOosConfig(**INPUTS, oos_fraction=1.5))
        assert not bad.success
    [row] = list_results()
    assert row["config"]["kind"] == "sweep" and meta["sweep_id"].value == row["id"]
    assert len(meta["ranking"].value.records) == 4 and "oos_netPnl" in meta["ranking"].value.records[0].data
    assert "| Metric | Strategy | Buy & hold |" in meta["tearsheet"].value
