"""Storing backtests: a `backtest_results` row (config, metrics, execution time, artifact paths) and,
beside it under `<artifacts_dir>/backtests/<key>/`, trades.parquet, equity.parquet, report.html
and equity.png. Also resolves a strategy reference the way every entry point accepts it."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xcoin_trading.backtest.engine import BacktestResult
from xcoin_trading.backtest.metrics import json_safe
from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.strategy import Strategy, load_source, load_strategy
from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,120}$")


@dataclass(frozen=True)
class ResolvedStrategy:
    strategy: Strategy
    params: dict[str, Any]  # stored defaults of a platform strategy, overlaid by the caller's
    strategy_id: int | None


@dataclass(frozen=True)
class SavedBacktest:
    id: int
    key: str
    directory: Path
    artifacts: dict[str, str]


def _ensure_store(settings: Settings) -> None:
    # The embedded SQLite store is migrated on first use; a server database is migrated by its
    # operator (`xcoin db upgrade`), never implicitly.
    if settings.embedded:
        from xcoin_trading.store.db import init_db

        init_db(settings)


def resolve_strategy(ref: str, settings: Settings | None = None) -> ResolvedStrategy:
    """A built-in name, a `.py` file, or the code of a strategy stored on the platform."""
    if ref in BUILTIN_STRATEGIES or ref.endswith(".py") or "/" in ref:
        return ResolvedStrategy(load_strategy(ref), {}, None)
    settings = settings or get_settings()
    _ensure_store(settings)
    from xcoin_trading.services.strategies import get_by_code
    from xcoin_trading.store.db import session_scope

    try:
        with session_scope(settings) as session:
            row = get_by_code(session, ref)
            builtin, source, params, sid = row.builtin, row.source, dict(row.params or {}), row.id
    except NotFound:
        raise NotFound(
            f"unknown strategy {ref!r}: not a built-in ({', '.join(BUILTIN_STRATEGIES)}), "
            "not a .py file, and no stored strategy has that code"
        ) from None
    if builtin:
        base = load_strategy(builtin)
        strategy = Strategy(
            ref,
            "builtin",
            base.signals_fn,
            base.default_params,
            base.check_params_fn,
            None,
            base.source_sha256,
        )
    elif source:
        strategy = load_source(ref, source)
    else:
        raise ValidationError("strategy", f"{ref!r} has neither source code nor a built-in to run")
    return ResolvedStrategy(strategy, params, sid)


def new_key(strategy_code: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", strategy_code)[:60]
    return f"{safe}-{stamp}-{uuid.uuid4().hex[:8]}"


def write_artifacts(result: BacktestResult, directory: Path, *, report: bool = True) -> dict[str, str]:
    from xcoin_trading.backtest.report import write_report

    directory.mkdir(parents=True, exist_ok=True)
    artifacts = {"dir": str(directory)}
    result.trades.write_parquet(directory / "trades.parquet")
    result.equity.write_parquet(directory / "equity.parquet")
    artifacts |= {"trades": str(directory / "trades.parquet"), "equity": str(directory / "equity.parquet")}
    if report:
        began = time.perf_counter()
        paths = write_report(result, directory / "report.html", directory / "equity.png")
        result.timings_ms["report"] = (time.perf_counter() - began) * 1000
        artifacts |= {"report": str(paths.html), "chart": str(paths.png)}
    return artifacts


def save_result(
    result: BacktestResult,
    *,
    key: str | None = None,
    strategy_id: int | None = None,
    user_id: int | None = None,
    context: dict[str, Any] | None = None,
    execution_time_ms: float | None = None,
    report: bool = True,
    settings: Settings | None = None,
) -> SavedBacktest:
    """Write the artifacts, then the row. If the row cannot be written the artifacts are removed."""
    settings = settings or get_settings()
    key = key or new_key(result.strategy)
    if not _KEY.match(key):
        raise ValidationError("key", f"must be letters, digits, '_', '.', '-' (max 121), got {key!r}")
    _ensure_store(settings)
    directory = settings.artifacts_dir / "backtests" / key
    if directory.exists():
        raise ValidationError("key", f"a backtest named {key!r} already has artifacts at {directory}")
    try:
        artifacts = write_artifacts(result, directory, report=report)
        config = json_safe(result.summary() | {"key": key, "timings_ms": result.timings_ms} | (context or {}))
        config.pop("metrics", None)
        elapsed = execution_time_ms if execution_time_ms is not None else result.timings_ms.get("total", 0.0)
        row_id = _insert(
            settings, strategy_id, result.strategy, config, result.metrics, artifacts, elapsed, user_id
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return SavedBacktest(row_id, key, directory, artifacts)


def _insert(
    settings: Settings,
    strategy_id: int | None,
    strategy_code: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    artifacts: dict[str, Any],
    execution_time_ms: float,
    user_id: int | None = None,
) -> int:
    """One history row (a backtest, sweep or walk-forward); its id."""
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BacktestResult as Row

    with session_scope(settings) as session:
        row = Row(
            strategy_id=strategy_id,
            strategy_code=strategy_code,
            user_id=user_id,
            config=config,
            metrics=json_safe(metrics),
            artifacts=artifacts,
            execution_time_ms=round(execution_time_ms),
        )
        session.add(row)
        session.flush()
        return row.id


def save_research(
    kind: str,
    strategy_code: str,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    frames: dict[str, Any],
    result: BacktestResult | None = None,
    strategy_id: int | None = None,
    execution_time_ms: float = 0.0,
    settings: Settings | None = None,
) -> SavedBacktest:
    """A sweep or walk-forward in the same history as backtests (`config.kind` tells them apart):
    its tables as Parquet (`frames`: name -> polars frame), the out-of-sample backtest's artifacts
    when there is one, and one row whose metrics are the best set's (sweep) or the stitched
    out-of-sample ones (walk-forward)."""
    settings = settings or get_settings()
    key = new_key(f"{strategy_code}-{kind}")
    _ensure_store(settings)
    directory = settings.artifacts_dir / "backtests" / key
    try:
        directory.mkdir(parents=True, exist_ok=False)
        artifacts = {"dir": str(directory)}
        if result is not None:
            artifacts |= write_artifacts(result, directory)
        for name, frame in frames.items():
            frame.write_parquet(directory / f"{name}.parquet")
            artifacts[name] = str(directory / f"{name}.parquet")
        config = json_safe(config | {"kind": kind, "key": key})
        row_id = _insert(settings, strategy_id, strategy_code, config, metrics, artifacts, execution_time_ms)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return SavedBacktest(row_id, key, directory, artifacts)


def get_result(result_id: int, *, settings: Settings | None = None) -> dict:
    """One stored backtest, sweep or walk-forward by id."""
    settings = settings or get_settings()
    _ensure_store(settings)
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BacktestResult as Row

    with session_scope(settings) as session:
        r = session.get(Row, result_id)
        if r is None:
            raise NotFound(f"no stored backtest has id {result_id} (see `xcoin backtest history`)")
        return {
            "id": r.id,
            "created_at": r.created_at,
            "strategy": r.strategy_code,
            "kind": (r.config or {}).get("kind", "backtest"),
            "config": r.config,
            "metrics": r.metrics,
            "artifacts": r.artifacts,
            "execution_time_ms": r.execution_time_ms,
        }


def list_results(
    strategy_code: str | None = None, *, limit: int = 20, settings: Settings | None = None
) -> list[dict]:
    """Newest first: id, when, strategy, span, key metrics and where the report is."""
    if limit < 1:
        raise ValidationError("limit", f"must be >= 1, got {limit}")
    settings = settings or get_settings()
    _ensure_store(settings)
    import sqlalchemy as sa

    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import BacktestResult as Row

    query = sa.select(Row).order_by(Row.created_at.desc(), Row.id.desc()).limit(limit)
    if strategy_code:
        query = query.where(Row.strategy_code == strategy_code)
    with session_scope(settings) as session:
        return [
            {
                "id": r.id,
                "created_at": r.created_at,
                "strategy": r.strategy_code,
                "config": r.config,
                "metrics": r.metrics,
                "artifacts": r.artifacts,
                "execution_time_ms": r.execution_time_ms,
            }
            for r in session.scalars(query)
        ]
