"""One backtest request, as the CLI and the Dagster asset both make it: resolve the strategy, load
candles (a file, or the lake through the market-data read API), run, store. Every input is
checked before anything runs, so a bad request writes no result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from xcoin_trading.backtest.engine import BacktestResult, SimulationConfig, run_backtest
from xcoin_trading.backtest.results import ResolvedStrategy, SavedBacktest, resolve_strategy, save_result
from xcoin_trading.config import Settings, get_settings
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.exchange.markets import Market
from xcoin_trading.strategy import read_candles_file
from xcoin_trading.timeframes import parse_utc


def parse_params(text: str | None) -> dict[str, str]:
    """`fast=10,slow=50` → {"fast": "10", "slow": "50"}; the strategy's types coerce the values."""
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValidationError("params", f"each entry must look like name=value, got {part!r}")
        params[name.strip()] = value.strip()
    return params


def market_for(symbol: str | None) -> Market | None:
    """The market whose step and minimums the backtest applies (None: fractional sizes)."""
    if symbol is None:
        return None
    try:
        return default_market(symbol)
    except ValidationError:  # a file's candles of a market the exchange does not list
        return None


@dataclass
class BacktestRequest:
    strategy: str
    symbol: str | None = None
    resolution: str | None = None
    start: str | date | datetime | None = None
    end: str | date | datetime | None = None
    data_file: str | None = None
    intrabar_file: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    initial_capital: Decimal | str | float = Decimal(10_000)
    risk_per_trade: Decimal | str | float = Decimal("0.02")
    leverage: Decimal | str | float = Decimal(1)
    commission: Decimal | str | float = Decimal("0.001")
    intrabar: str = "sl_first"
    gap_fill: str = "open"
    slippage: Decimal | str | float = Decimal(0)
    slippage_range: Decimal | str | float = Decimal(0)
    round_to_market: bool = True

    def simulation_config(self) -> SimulationConfig:
        return SimulationConfig(
            initial_capital=self.initial_capital,
            risk_per_trade=self.risk_per_trade,
            leverage=self.leverage,
            commission=self.commission,
            intrabar=self.intrabar,  # type: ignore[arg-type]
            gap_fill=self.gap_fill,  # type: ignore[arg-type]
            slippage=self.slippage,
            slippage_range=self.slippage_range,
            market=market_for(self.symbol) if self.round_to_market else None,
            resolution=self.resolution,
        )

    def context(self) -> dict[str, Any]:
        """What is stored beside the result to say where its candles came from."""
        return {
            "symbol": self.symbol,
            "resolution": self.resolution,
            "start": str(self.start) if self.start is not None else None,
            "end": str(self.end) if self.end is not None else None,
            "data_file": self.data_file,
        }


def load_inputs(request: BacktestRequest, settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Candles (and 1m candles for `intrabar="1m"`) from the file or the lake, range applied."""
    start = parse_utc(request.start or None, "start")
    end = parse_utc(request.end or None, "end", end=True)
    if start and end and start >= end:
        raise ValidationError("start", f"must be before end ({end.isoformat()}), got {start.isoformat()}")
    if request.data_file:
        candles = read_candles_file(request.data_file)
        intrabar = read_candles_file(request.intrabar_file) if request.intrabar_file else None
        if start or end:
            lo = int(start.timestamp() * 1000) if start else None
            hi = int(end.timestamp() * 1000) if end else None
            cond = pl.lit(True)
            if lo is not None:
                cond = cond & (pl.col("open_time") >= lo)
            if hi is not None:
                cond = cond & (pl.col("open_time") < hi)
            candles = candles.filter(cond)
            if candles.height == 0:
                raise ValidationError(
                    "start", f"{request.data_file} has no candles between {start} and {end}"
                )
        return candles, intrabar
    missing = [n for n in ("symbol", "resolution", "start", "end") if getattr(request, n) in (None, "")]
    if missing:
        raise ValidationError(missing[0], "is required unless a data file is given")
    candles = load_lake_candles(request.symbol, request.resolution, start, end, settings)
    intrabar = None
    if request.intrabar == "1m" and request.resolution != "1m":
        from xcoin_trading.marketdata.lake import load_candles

        intrabar = load_candles(request.symbol, "1m", start, end, settings)
    return candles, intrabar


def load_lake_candles(
    symbol: str, resolution: str, start: datetime, end: datetime, settings: Settings
) -> pl.DataFrame:
    """The lake's candles at `resolution`; when the lake has none of those days at that resolution
    but has them in 1m, built from the 1m candles (the same aggregation the Dagster assets use)."""
    from xcoin_trading.errors import NotFound
    from xcoin_trading.marketdata.lake import load_candles
    from xcoin_trading.marketdata.resample import resample

    try:
        return load_candles(symbol, resolution, start, end, settings)
    except NotFound:
        if resolution == "1m":
            raise
        try:
            minutes = load_candles(symbol, "1m", start, end, settings)
        except NotFound:
            raise NotFound(
                f"the lake has no {symbol} {resolution} candles for that range, nor the 1m candles to "
                f"build them from (import a file with `xcoin data import` or backfill with `xcoin data backfill`)"
            ) from None
        return resample(minutes, resolution)


def validation_problems(request: BacktestRequest, settings: Settings | None = None) -> list[str]:
    """Why the strategy would not be allowed to trade live: a `.py` file is validated like an upload
    (sandboxed: compiles, runs, does not look ahead); a stored strategy reports its recorded status.
    Built-ins are trusted. A backtest of code that looks ahead shows profits it could never make."""
    ref = request.strategy
    from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES

    if ref in BUILTIN_STRATEGIES:
        return []
    resolved = resolve_strategy(ref, settings)  # names a missing file or an unknown code first
    if resolved.strategy_id is None:  # a .py file
        from xcoin_trading.strategy.validation import validate_strategy

        path = Path(ref)
        params = resolved.strategy.resolve_params({**resolved.params, **request.params})
        return validate_strategy(path.stem, path.read_text(), params).errors
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import Strategy

    with session_scope(settings or get_settings()) as session:
        row = session.get(Strategy, resolved.strategy_id)
        if row.validation_status == "INVALID":
            return list(row.validation_errors or ["it was stored INVALID"])
    return []


def prepare(request: BacktestRequest, settings: Settings | None = None):
    """Validate everything a run needs, in the order a user would fix it."""
    settings = settings or get_settings()
    config = request.simulation_config()
    resolved: ResolvedStrategy = resolve_strategy(request.strategy, settings)
    params = resolved.strategy.resolve_params({**resolved.params, **request.params})
    candles, intrabar = load_inputs(request, settings)
    return settings, config, resolved, params, candles, intrabar


def execute(
    request: BacktestRequest,
    *,
    settings: Settings | None = None,
    save: bool = True,
    key: str | None = None,
    report_path: str | Path | None = None,
) -> tuple[BacktestResult, SavedBacktest | None]:
    """Run one backtest end to end; store it (row + artifacts) unless `save=False`."""
    began = time.perf_counter()
    settings, config, resolved, params, candles, intrabar = prepare(request, settings)
    result = run_backtest(candles, resolved.strategy, params, config, intrabar_candles=intrabar)
    result.source = request.context()
    saved = None
    if save:
        saved = save_result(
            result,
            key=key,
            strategy_id=resolved.strategy_id,
            context=request.context(),
            execution_time_ms=(time.perf_counter() - began) * 1000,
            settings=settings,
        )
    if report_path is not None:
        from xcoin_trading.backtest.report import write_report

        write_report(result, Path(report_path))
    return result, saved
