"""Research assets: a sweep ranked in sample and scored out of sample, and a walk-forward whose
windows are partitions (each window's training is its own run, visible per window in the UI).

Walk-forward from the UI: materialize `research/walk_forward_plan` with its config (it splits the
candles into windows and adds one `research_windows` partition per window: w01, w02, ...), then
backfill `research/walk_forward_window` over those partitions, then materialize
`research/walk_forward_oos`, which trades each window's chosen set on its test candles and stores
the stitched out-of-sample backtest in the history. One plan is current at a time (the last
materialized); every rule lives in `xcoin_trading.backtest`.
"""

import base64
import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from xcoin_pipelines.defs.backtest.assets import user_errors
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

RESEARCH_WINDOWS = dg.DynamicPartitionsDefinition(name="research_windows")
CANDLE_DEPS = [
    dg.AssetDep(dg.AssetKey(["market_data", f"candles_{r}"]), partition_mapping=dg.AllPartitionMapping())
    for r in TRADED_RESOLUTIONS
]


class ResearchConfig(dg.Config):
    strategy: str = Field(description="Built-in name, a .py file path, or a stored strategy's code.")
    symbol: str = Field(default="BTCUSDT", description="Market, e.g. BTCUSDT or B-BTC_USDT (futures).")
    resolution: str = Field(default="1h", description=f"Candle resolution: {', '.join(TRADED_RESOLUTIONS)}.")
    start: str = Field(default="2024-01-01", description="First day (YYYY-MM-DD) or ISO datetime, UTC.")
    end: str = Field(default="2024-12-31", description="Last day, included, or ISO datetime (exclusive).")
    grid: str = Field(description="Grid over strategy params: 'fast=10,20,30;slow=50:200:50'.")
    metric: str = Field(
        default="sharpeRatio", description="Metric that ranks / chooses, e.g. sharpeRatio, netPnl."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed strategy parameters.")
    initial_capital: float = Field(default=10_000.0)
    risk_per_trade: float = Field(default=0.02)
    leverage: float = Field(default=1.0)
    commission: float = Field(default=0.001, description="Fee per side, a fraction of notional.")
    slippage: float = Field(default=0.0, description="Market fills move this fraction against you.")
    gap_fill: Literal["open", "level"] = Field(default="open")
    workers: int = Field(default=0, description="Parallel threads; 0 = all cores.")

    def request(self):
        from xcoin_trading.backtest.service import BacktestRequest

        return BacktestRequest(
            strategy=self.strategy, symbol=self.symbol, resolution=self.resolution, start=self.start, end=self.end,
            params=dict(self.params), initial_capital=repr(self.initial_capital),
            risk_per_trade=repr(self.risk_per_trade), leverage=repr(self.leverage),
            commission=repr(self.commission), slippage=repr(self.slippage), gap_fill=self.gap_fill,
        )  # fmt: skip

    def context(self) -> dict[str, Any]:
        return self.request().context() | {
            "grid": self.grid,
            "metric": self.metric,
            "params": dict(self.params),
        }


class SweepOosConfig(ResearchConfig):
    oos_fraction: float = Field(
        default=0.3, description="Last fraction of the candles held out of the ranking."
    )


class WalkForwardConfig(ResearchConfig):
    windows: int = Field(default=10, description="Test windows tiling the end of the data.")
    train_ratio: float = Field(default=3.0, description="Train window length / test window length.")
    anchored: bool = Field(default=False, description="Train windows all start at the first candle.")


def _table(frame, limit: int = 20) -> dg.MetadataValue:
    shown = frame.head(limit)
    return dg.MetadataValue.table(
        records=[dg.TableRecord({k: (v if isinstance(v, int | float | str | bool) else str(v))
                                 for k, v in row.items() if v is not None}) for row in shown.iter_rows(named=True)],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, str(shown.schema[c])) for c in shown.columns]),
    )  # fmt: skip


def _plan_dir(settings) -> Path:
    return settings.artifacts_dir / "research" / "walk_forward"


@dg.asset(
    key_prefix=["research"],
    deps=CANDLE_DEPS,
    group_name="research",
    kinds={"python", "numba", "parquet"},
    description="Every grid combination ranked on the first part of the candles and scored on the held-out "
    "rest; stored in the backtest history with its ranking and edge warnings; the best set's tearsheet.",
)
def sweep_out_of_sample(
    context: dg.AssetExecutionContext, config: SweepOosConfig, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    import time

    from xcoin_trading.backtest import tearsheet as ts
    from xcoin_trading.backtest.engine import run_backtest
    from xcoin_trading.backtest.report import render_chart
    from xcoin_trading.backtest.results import save_research
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import edge_warnings, parse_grid, run_sweep

    began = time.perf_counter()
    with user_errors():
        grid = parse_grid(config.grid)
        settings, sim, resolved, params, candles, _ = prepare(config.request(), xcoin.get())
        ranking = run_sweep(candles, resolved.strategy, grid, sim, base_params=params, metric=config.metric,
                            workers=config.workers or None, oos_fraction=config.oos_fraction)  # fmt: skip
    best = ranking.row(0, named=True)
    chosen = {k.removeprefix("param_"): v for k, v in best.items() if k.startswith("param_")}
    warnings = edge_warnings(grid, chosen)
    for w in warnings:
        context.log.warning(w)
    saved = save_research(
        "sweep", resolved.strategy.code, strategy_id=resolved.strategy_id,
        config=config.context() | {"oos_fraction": config.oos_fraction, "combinations": ranking.height,
                                   "warnings": warnings, "simulation": sim.to_json()},
        metrics={k: v for k, v in best.items() if k != "rank"}, frames={"ranking": ranking},
        execution_time_ms=(time.perf_counter() - began) * 1000, settings=settings,
    )  # fmt: skip
    # The best set over the whole span, as a tearsheet (its held-out part is in the ranking's oos_ columns).
    result = run_backtest(candles, resolved.strategy, {**params, **chosen}, sim)
    result.source = config.request().context()
    sheet = ts.build(result)
    png = saved.directory / "best.png"
    render_chart(result, png, dpi=60, sheet=sheet)
    md = ts.markdown(
        result, sheet=sheet, chart_png_b64=base64.b64encode(png.read_bytes()).decode(), trades=10
    )
    return dg.MaterializeResult(
        metadata={
            "sweep_id": dg.MetadataValue.int(saved.id),
            "ranking": _table(ranking),
            "ranking_parquet": dg.MetadataValue.path(saved.artifacts["ranking"]),
            "best_params": dg.MetadataValue.json(chosen),
            "edge_warnings": dg.MetadataValue.json(warnings),
            f"best_{config.metric}": dg.MetadataValue.float(float(best[config.metric] or 0.0)),
            f"best_oos_{config.metric}": dg.MetadataValue.float(
                float(best.get(f"oos_{config.metric}") or 0.0)
            ),
            "tearsheet": dg.MetadataValue.md(md),
            "dagster/row_count": dg.MetadataValue.int(ranking.height),
        }
    )


@dg.asset(
    key_prefix=["research"],
    deps=CANDLE_DEPS,
    group_name="research",
    kinds={"python", "json"},
    description="Splits the candles into walk-forward windows and adds one research_windows partition per window.",
)
def walk_forward_plan(
    context: dg.AssetExecutionContext, config: WalkForwardConfig, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import check_grid, check_metric, parse_grid
    from xcoin_trading.backtest.walkforward import make_windows

    with user_errors():
        grid = parse_grid(config.grid)
        check_metric(config.metric)
        settings, _, resolved, _, candles, _ = prepare(config.request(), xcoin.get())
        check_grid(resolved.strategy, grid)
        windows = make_windows(candles.height, config.windows, config.train_ratio, anchored=config.anchored)
    directory = _plan_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("w*.json"):
        stale.unlink()
    (directory / "plan.json").write_text(
        json.dumps({"config": config.model_dump(), "run_id": context.run_id})
    )
    keys = [w.key for w in windows]
    stale_keys = set(context.instance.get_dynamic_partitions(RESEARCH_WINDOWS.name)) - set(keys)
    for key in stale_keys:
        context.instance.delete_dynamic_partition(RESEARCH_WINDOWS.name, key)
    context.instance.add_dynamic_partitions(RESEARCH_WINDOWS.name, keys)
    t = candles.get_column("open_time")
    rows = [{"window": w.key, "train_from": str(t[w.train[0]]), "test_from": str(t[w.test[0]]),
             "test_to": str(t[w.test[1] - 1]), "train_candles": w.train[1] - w.train[0],
             "test_candles": w.test[1] - w.test[0]} for w in windows]  # fmt: skip
    import polars as pl

    return dg.MaterializeResult(
        metadata={"windows": _table(pl.DataFrame(rows), limit=100), "partitions": dg.MetadataValue.json(keys)}
    )


def _load_plan(settings) -> tuple[WalkForwardConfig, Any, Any, dict, Any, list]:
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.walkforward import make_windows

    path = _plan_dir(settings) / "plan.json"
    if not path.exists():
        raise dg.Failure(description="no walk-forward plan: materialize research/walk_forward_plan first",
                         allow_retries=False)  # fmt: skip
    config = WalkForwardConfig(**json.loads(path.read_text())["config"])
    with user_errors():
        _, sim, resolved, params, candles, _ = prepare(config.request(), settings)
    windows = make_windows(candles.height, config.windows, config.train_ratio, anchored=config.anchored)
    return config, sim, resolved, params, candles, windows


@dg.asset(
    key_prefix=["research"],
    deps=[dg.AssetDep(dg.AssetKey(["research", "walk_forward_plan"]))],
    partitions_def=RESEARCH_WINDOWS,
    group_name="research",
    kinds={"python", "numba", "parquet"},
    description="One walk-forward window: every combination on its train candles, the best chosen "
    "(checked for look-ahead against its test candles).",
)
def walk_forward_window(
    context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    from xcoin_trading.backtest.sweep import parse_grid
    from xcoin_trading.backtest.walkforward import train_windows

    settings = xcoin.get()
    config, sim, resolved, params, candles, windows = _load_plan(settings)
    window = next((w for w in windows if w.key == context.partition_key), None)
    if window is None:
        raise dg.Failure(
            description=f"window {context.partition_key} is not in the current plan", allow_retries=False
        )
    with user_errors():
        [choice] = train_windows(candles, resolved.strategy, parse_grid(config.grid), sim, [window],
                                 base_params=params, metric=config.metric, workers=config.workers or None)  # fmt: skip
    directory = _plan_dir(settings)
    choice.ranking.write_parquet(directory / f"{window.key}.parquet")
    (directory / f"{window.key}.json").write_text(json.dumps(choice.to_json(), default=str))
    for w in choice.warnings:
        context.log.warning(w)
    t = candles.get_column("open_time")
    return dg.MaterializeResult(
        metadata={
            "train": dg.MetadataValue.text(f"{t[window.train[0]]} → {t[window.train[1] - 1]}"),
            "test": dg.MetadataValue.text(f"{t[window.test[0]]} → {t[window.test[1] - 1]}"),
            "chosen_params": dg.MetadataValue.json(choice.params or {}),
            f"in_sample_{config.metric}": dg.MetadataValue.float(float(choice.in_sample or 0.0)),
            "ranking": _table(choice.ranking),
            "edge_warnings": dg.MetadataValue.json(choice.warnings),
        }
    )


@dg.asset(
    key_prefix=["research"],
    deps=[
        dg.AssetDep(
            dg.AssetKey(["research", "walk_forward_window"]), partition_mapping=dg.AllPartitionMapping()
        )
    ],
    group_name="research",
    kinds={"python", "numba", "parquet"},
    description="Each window's chosen set traded on its test candles, compounding; the stitched out-of-sample "
    "backtest stored in the history with its tearsheet.",
)
def walk_forward_oos(context: dg.AssetExecutionContext, xcoin: XcoinSettingsResource) -> dg.MaterializeResult:
    import polars as pl

    from xcoin_trading.backtest import tearsheet as ts
    from xcoin_trading.backtest.results import save_research
    from xcoin_trading.backtest.walkforward import WindowChoice, out_of_sample

    settings = xcoin.get()
    config, sim, resolved, _, candles, windows = _load_plan(settings)
    directory = _plan_dir(settings)
    missing = [w.key for w in windows if not (directory / f"{w.key}.json").exists()]
    if missing:
        raise dg.Failure(description=f"windows not trained yet: {', '.join(missing)}", allow_retries=False)
    choices = []
    for w in windows:
        saved = json.loads((directory / f"{w.key}.json").read_text())
        choices.append(WindowChoice(w, pl.read_parquet(directory / f"{w.key}.parquet"), saved["params"],
                                    saved["in_sample"], saved["warnings"]))  # fmt: skip
    with user_errors():
        wf = out_of_sample(candles, resolved.strategy, choices, sim, metric=config.metric)
    wf.oos.source = config.request().context()
    frames = {"windows": wf.windows} | {f"ranking_{c.window.key}": c.ranking for c in choices}
    saved = save_research(
        "walk_forward", resolved.strategy.code, strategy_id=resolved.strategy_id,
        config=config.context() | {"windows": config.windows, "train_ratio": config.train_ratio,
                                   "anchored": config.anchored, "warnings": wf.warnings, "simulation": sim.to_json()},
        metrics=wf.oos.metrics, frames=frames, result=wf.oos, settings=settings,
    )  # fmt: skip
    png = base64.b64encode(Path(saved.artifacts["chart"]).read_bytes()).decode()
    m = wf.oos.metrics
    return dg.MaterializeResult(
        metadata={
            "walk_forward_id": dg.MetadataValue.int(saved.id),
            "windows": _table(wf.windows, limit=100),
            "oos_net_pnl": dg.MetadataValue.float(float(m["netPnl"])),
            "oos_sharpe": dg.MetadataValue.float(float(m["sharpeRatio"] or 0.0)),
            "oos_max_drawdown_pct": dg.MetadataValue.float(float(m["maxDrawdownPct"])),
            "edge_warnings": dg.MetadataValue.json(wf.warnings),
            "report": dg.MetadataValue.path(saved.artifacts["report"]),
            "tearsheet": dg.MetadataValue.md(ts.markdown(wf.oos, chart_png_b64=png, trades=10)),
        }
    )
