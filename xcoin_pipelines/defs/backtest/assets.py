"""Backtest and sweep assets. Each body reads its config, calls `xcoin_trading.backtest`, and
reports metadata; every rule lives in the domain package.

Launch a backtest from the UI: asset graph ▸ `backtests/backtest_result` ▸ Materialize (every field
has a default that works on `make demo`'s data), or Shift+click ▸ Launchpad to pick the strategy,
its typed parameters, market, resolution and range. One run is one materialization; its tags
(`xcoin/strategy`, `xcoin/symbol`, `xcoin/resolution`, `xcoin/range`) make runs searchable.

Why not a partition per backtest: a partition has to be named (added) before the launch, its name
says nothing Dagster can check, and a failed attempt paints it red beside another run's metadata.
Runs are the natural unit here: the config is the backtest, the run's tags say which one it was.
"""

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from xcoin_pipelines.defs.backtest.config import BacktestConfig, SweepConfig
from xcoin_pipelines.resources import XcoinSettingsResource
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

# Lineage only: a backtest reads whichever candle asset its config names, over a range only its config
# knows, so the edge names no partition. (An AllPartitionMapping made every run's step enumerate
# days × symbols keys of each of the six candle assets for input data versions, which Dagster then
# discards past 100 keys: 0.5 CPU-s per run with two symbols, growing with every symbol and day.)
CANDLE_DEPS = [
    dg.AssetDep(
        dg.AssetKey(["market_data", f"candles_{r}"]),
        partition_mapping=dg.SpecificPartitionsPartitionMapping([]),
    )
    for r in TRADED_RESOLUTIONS
]
# (metadata key, label, decimals) in the order the summary shows them; None: an integer count.
METRICS: tuple[tuple[str, str, int | None], ...] = (
    ("totalTrades", "trades", None),
    ("winRate", "win rate %", 1),
    ("netPnl", "net P&L", 2),
    ("totalPnlPct", "return %", 2),
    ("sharpeRatio", "Sharpe", 2),
    ("sortinoRatio", "Sortino", 2),
    ("maxDrawdownPct", "max drawdown %", 2),
    ("profitFactor", "profit factor", 2),
    ("cagrPct", "CAGR %", 2),
    ("totalCommission", "fees", 2),
    ("finalCapital", "final capital", 2),
    ("ambiguousCandles", "ambiguous candles", None),
)
METRIC_KEYS = tuple(k for k, _, _ in METRICS)
RUN_TAGS = ("xcoin/strategy", "xcoin/symbol", "xcoin/resolution", "xcoin/range")


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad config or missing candles: fail the run with the domain's one-line reason, no traceback
    (research assets too)."""
    from xcoin_trading.errors import XcoinError

    try:
        yield
    except XcoinError as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc


def _rounded(value: Any, decimals: int | None) -> int | float | None:
    try:
        return int(value) if decimals is None else round(float(value), decimals)
    except (TypeError, ValueError):  # None: an undefined ratio (profit factor without a loss)
        return None


def metric_metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    """One entry per headline metric, rounded as shown (the UI plots them across materializations)."""
    out: dict[str, Any] = {}
    for key, _, decimals in METRICS:
        value = _rounded(metrics.get(key), decimals)
        if value is None:
            out[key] = dg.MetadataValue.null()
        else:
            out[key] = dg.MetadataValue.int(value) if decimals is None else dg.MetadataValue.float(value)
    return out


def summary_markdown(title: str, metrics: dict[str, Any], png: bytes, report: str) -> str:
    """The one summary: what ran, the rounded metrics, and the equity/drawdown chart inline."""
    rows = []
    for key, label, decimals in METRICS:
        value = _rounded(metrics.get(key), decimals)
        shown = "–" if value is None else (f"{value:,}" if decimals is None else f"{value:,.{decimals}f}")
        rows.append(f"| {label} | {shown} |")
    chart = base64.b64encode(png).decode()
    return "\n".join(
        [f"**{title}**", "", "| metric | value |", "|---|---:|", *rows, "",
         f"![equity and drawdown](data:image/png;base64,{chart})", "", f"HTML report: `{report}`"]
    )  # fmt: skip


def _inputs(request: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What the run used, defaults and the resolved range included (JSON-safe)."""
    return {
        "strategy": request.strategy, "params": params, "symbol": request.symbol,
        "resolution": request.resolution, "start": str(request.start), "end": str(request.end),
        "initial_capital": str(request.initial_capital), "risk_per_trade": str(request.risk_per_trade),
        "leverage": str(request.leverage), "commission": str(request.commission),
        "intrabar": request.intrabar, "gap_fill": request.gap_fill,
    }  # fmt: skip


def _tag_run(context: dg.AssetExecutionContext, request: Any) -> None:
    """Tags derived from the config (a UI launch cannot set them): filter runs by strategy, market…"""
    values = (request.strategy, request.symbol, request.resolution, f"{request.start}..{request.end}")
    context.instance.add_run_tags(context.run_id, dict(zip(RUN_TAGS, values, strict=True)))


@dg.asset(
    key_prefix=["backtests"],
    deps=CANDLE_DEPS,
    group_name="backtests",
    kinds={"python", "numba", "parquet"},
    description="One backtest per run (its config is the backtest): trades, equity curve, metrics, "
    "HTML/PNG report, stored as a backtest_results row. Materialize runs the demo-ready defaults.",
)
def backtest_result(
    context: dg.AssetExecutionContext, config: BacktestConfig, xcoin: XcoinSettingsResource
) -> dg.MaterializeResult:
    from xcoin_trading.backtest.service import execute

    settings = xcoin.get()
    with user_errors():
        request = config.request(settings)
        _tag_run(context, request)
        # a re-run with the same config is a new backtest: the run id keeps the keys apart
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", request.strategy)[-60:] + f"-{context.run_id[:8]}"
        result, saved = execute(request, settings=settings, key=key)
    assert saved is not None
    inputs = _inputs(request, result.params)
    context.log.info(f"inputs: {json.dumps(inputs, default=str)}")
    report = saved.artifacts["report"]
    m = result.metrics
    title = (
        f"Backtest #{saved.id}: {request.strategy} on {request.symbol} {request.resolution}, "
        f"{request.start}..{request.end} ({m['candles']:,} candles)"
    )
    png = (saved.directory / "equity.png").read_bytes()
    context.log.info(
        f"outcome: backtest #{saved.id}, {m['totalTrades']} trades, net P&L {_rounded(m['netPnl'], 2)}, "
        f"Sharpe {_rounded(m['sharpeRatio'], 2)}; report {report}"
    )
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary_markdown(title, m, png, report)),
            "inputs": dg.MetadataValue.json(inputs),
            "backtest_id": dg.MetadataValue.int(saved.id),
            "report": dg.MetadataValue.url(f"file://{report}"),
            "report_path": dg.MetadataValue.path(report),
            "trades_parquet": dg.MetadataValue.path(saved.artifacts["trades"]),
            "equity_parquet": dg.MetadataValue.path(saved.artifacts["equity"]),
            "dagster/row_count": dg.MetadataValue.int(result.trades.height),
            "execution_ms": dg.MetadataValue.float(round(result.timings_ms["total"], 1)),
            "report_ms": dg.MetadataValue.float(round(result.timings_ms.get("report", 0.0), 1)),
            **metric_metadata(m),
        }
    )


def _round_cell(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


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

    with user_errors():
        grid = parse_grid(config.grid)
        request = config.request(xcoin.get())
        _tag_run(context, request)
        settings, sim, resolved, params, candles, _ = prepare(request, xcoin.get())

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            context.log.info(f"sweep: {done}/{total} backtests")

    ranking = run_sweep(candles, resolved.strategy, grid, sim, base_params=params, metric=config.metric,
                        workers=config.workers or None, progress=progress)  # fmt: skip
    out = settings.artifacts_dir / "sweeps" / f"{resolved.strategy.code}-{context.run_id[:8]}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    ranking.write_parquet(out)
    shown = ranking.head(20)
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({k: _round_cell(v) for k, v in row.items() if v is not None})
                 for row in shown.iter_rows(named=True)],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, str(shown.schema[c])) for c in shown.columns]),
    )  # fmt: skip
    best = ranking.row(0, named=True)
    return dg.MaterializeResult(
        metadata={
            "ranking": table,
            "inputs": dg.MetadataValue.json({**_inputs(request, params), "grid": config.grid}),
            "ranking_parquet": dg.MetadataValue.path(str(out)),
            "combinations": dg.MetadataValue.int(ranking.height),
            "metric": dg.MetadataValue.text(config.metric),
            "best_params": dg.MetadataValue.json(
                {k.removeprefix("param_"): v for k, v in best.items() if k.startswith("param_")}
            ),
            f"best_{config.metric}": dg.MetadataValue.float(round(float(best[config.metric] or 0.0), 4)),
            "dagster/row_count": dg.MetadataValue.int(ranking.height),
        }
    )
