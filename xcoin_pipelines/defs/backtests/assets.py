"""Backtest and sweep assets. Each body reads its config, calls `xcoin_trading.backtest`, and
reports metadata; every rule lives in the domain package.

Launch a backtest from the UI: Materialize ▸ pick or add a `backtest_runs` partition (the run's
name, e.g. `sma-btc-2024`) ▸ Open launchpad ▸ "Scaffold missing config" ▸ fill `strategy`.
"""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

BACKTEST_RUNS = dg.DynamicPartitionsDefinition(name="backtest_runs")
# Lineage only: a backtest reads whichever candle asset its config names, over any range.
CANDLE_DEPS = [
    dg.AssetDep(dg.AssetKey(["market_data", f"candles_{r}"]), partition_mapping=dg.AllPartitionMapping())
    for r in TRADED_RESOLUTIONS
]
METRIC_KEYS = (
    "totalTrades",
    "winRate",
    "netPnl",
    "totalPnlPct",
    "sharpeRatio",
    "sortinoRatio",
    "maxDrawdownPct",
    "profitFactor",
    "cagrPct",
    "totalCommission",
    "finalCapital",
    "ambiguousCandles",
)


class _BacktestInputs(dg.Config):
    strategy: str = Field(
        description="Built-in name (sma_crossover, rsi_reversion, bollinger_breakout, "
        "atr_trend), a .py file path, or a stored strategy's code."
    )
    symbol: str = Field(default="BTCUSDT", description="Market, e.g. BTCUSDT or B-BTC_USDT (futures).")
    resolution: str = Field(default="1h", description=f"Candle resolution: {', '.join(TRADED_RESOLUTIONS)}.")
    start: str = Field(default="2024-01-01", description="First day (YYYY-MM-DD) or ISO datetime, UTC.")
    end: str = Field(
        default="2024-12-31", description="Last day, included (YYYY-MM-DD), or ISO datetime (exclusive)."
    )
    initial_capital: float = Field(default=10_000.0, description="Starting capital in the quote currency.")
    risk_per_trade: float = Field(default=0.02, description="Fraction of equity risked per trade, in (0, 1].")
    leverage: float = Field(default=1.0, description="Leverage, >= 1.")
    commission: float = Field(
        default=0.001, description="Fee per side as a fraction of notional (0.001 = 0.1 %)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Strategy parameters, e.g. {fast: 20, slow: 50}."
    )
    intrabar: Literal["sl_first", "tp_first", "1m"] = Field(
        default="sl_first",
        description="When one candle touches SL and TP: stop first, take profit first, or "
        "decide on the 1-minute candles inside it (they must be in the lake).",
    )
    gap_fill: Literal["open", "level"] = Field(
        default="open",
        description="A candle opening beyond SL/TP fills at its open (default) or at the level.",
    )

    def request(self):
        from xcoin_trading.backtest.service import BacktestRequest

        return BacktestRequest(
            strategy=self.strategy, symbol=self.symbol, resolution=self.resolution, start=self.start, end=self.end,
            params=dict(self.params), initial_capital=repr(self.initial_capital),
            risk_per_trade=repr(self.risk_per_trade), leverage=repr(self.leverage),
            commission=repr(self.commission), intrabar=self.intrabar, gap_fill=self.gap_fill,
        )  # fmt: skip


class BacktestConfig(_BacktestInputs):
    """The seed's BacktestConfig: what one backtest run needs."""


class SweepConfig(_BacktestInputs):
    grid: str = Field(description="Grid over strategy params (and SL/TP): 'fast=10,20,30;slow=50:200:50'.")
    metric: str = Field(
        default="sharpeRatio", description="Ranking metric, e.g. sharpeRatio, netPnl, calmarRatio."
    )
    workers: int = Field(default=0, description="Parallel threads; 0 = all cores.")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad config or missing candles: fail the run with the domain's one-line reason, no traceback."""
    from xcoin_trading.errors import XcoinError

    try:
        yield
    except XcoinError as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc


def _metric_metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in METRIC_KEYS:
        v = metrics.get(k)
        out[k] = dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v or 0.0))
    return out


@dg.asset(
    key_prefix=["backtests"],
    partitions_def=BACKTEST_RUNS,
    deps=CANDLE_DEPS,
    group_name="backtests",
    kinds={"python", "numba", "parquet"},
    description="One backtest per partition: trades, equity curve, metrics, HTML/PNG report.",
)
def backtest_result(
    context: dg.AssetExecutionContext, config: BacktestConfig, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    from xcoin_trading.backtest.service import execute

    key = f"{context.partition_key}-{context.run_id[:8]}"  # a re-run of the partition keeps the old one
    with _user_errors():
        result, saved = execute(config.request(), settings=xcoin.get(), key=key)
    assert saved is not None
    png = base64.b64encode((saved.directory / "equity.png").read_bytes()).decode()
    context.log.info(
        f"backtest #{saved.id}: {result.metrics['totalTrades']} trades, report {saved.artifacts['report']}"
    )
    return dg.MaterializeResult(
        metadata={
            "backtest_id": dg.MetadataValue.int(saved.id),
            "equity_chart": dg.MetadataValue.md(f"![equity and drawdown](data:image/png;base64,{png})"),
            "report": dg.MetadataValue.path(saved.artifacts["report"]),
            "trades_parquet": dg.MetadataValue.path(saved.artifacts["trades"]),
            "equity_parquet": dg.MetadataValue.path(saved.artifacts["equity"]),
            "dagster/row_count": dg.MetadataValue.int(result.trades.height),
            "execution_ms": dg.MetadataValue.float(round(result.timings_ms["total"], 1)),
            **_metric_metadata(result.metrics),
        }
    )


@dg.asset(
    key_prefix=["backtests"],
    deps=CANDLE_DEPS,
    group_name="backtests",
    kinds={"python", "numba", "parquet"},
    description="Every combination of a parameter grid, backtested in parallel and ranked by one metric.",
)
def param_sweep(
    context: dg.AssetExecutionContext, config: SweepConfig, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    from xcoin_trading.backtest.service import prepare
    from xcoin_trading.backtest.sweep import parse_grid, run_sweep

    with _user_errors():
        grid = parse_grid(config.grid)
        settings, sim, resolved, params, candles, _ = prepare(config.request(), xcoin.get())

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            context.log.info(f"sweep: {done}/{total} backtests")

    ranking = run_sweep(candles, resolved.strategy, grid, sim, base_params=params, metric=config.metric,
                        workers=config.workers or None, progress=progress)  # fmt: skip
    out = settings.artifacts_dir / "sweeps" / f"{resolved.strategy.code}-{context.run_id[:8]}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    ranking.write_parquet(out)
    shown = ranking.head(20)
    columns = [c for c in shown.columns]
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({k: v for k, v in row.items() if v is not None})
                 for row in shown.with_columns().iter_rows(named=True)],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, str(shown.schema[c])) for c in columns]),
    )  # fmt: skip
    best = ranking.row(0, named=True)
    return dg.MaterializeResult(
        metadata={
            "ranking": table,
            "ranking_parquet": dg.MetadataValue.path(str(out)),
            "combinations": dg.MetadataValue.int(ranking.height),
            "metric": dg.MetadataValue.text(config.metric),
            "best_params": dg.MetadataValue.json(
                {k.removeprefix("param_"): v for k, v in best.items() if k.startswith("param_")}
            ),
            f"best_{config.metric}": dg.MetadataValue.float(float(best[config.metric] or 0.0)),
            "dagster/row_count": dg.MetadataValue.int(ranking.height),
        }
    )
