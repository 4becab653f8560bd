"""`/api/backtest`: run a backtest of a visible strategy, and the caller's backtest history."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Path, Query
from sqlalchemy import or_, select

from xcoin_trading.api import convert
from xcoin_trading.api.deps import SessionDep, SettingsDep, UserDep
from xcoin_trading.api.routing import NOT_FOUND
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.backtests import BacktestHistoryOut, BacktestOut, BacktestRunRequest
from xcoin_trading.api.schemas.base import MAX_ID
from xcoin_trading.errors import ValidationError
from xcoin_trading.services.strategies import visible_strategy
from xcoin_trading.store.models import BacktestResult
from xcoin_trading.timeframes import resolution_ms

router = make_router(["backtests"], prefix="/api/backtest")


MAX_SYNC_CANDLES = 500_000  # about a year of 1m candles: seconds of work, fine inside a request


@router.post("/run", status_code=201, response_model=BacktestOut, responses=NOT_FOUND)
def run(body: BacktestRunRequest, user: UserDep, session: SessionDep, settings: SettingsDep) -> BacktestOut:
    """Runs synchronously on the lake's candles and returns the stored result (history lists it).
    Built-in strategies only: uploaded code never runs inside the API process (it runs in the
    sandbox, through the Dagster backtest asset). Ranges above MAX_SYNC_CANDLES are refused."""
    from xcoin_trading.backtest.engine import run_backtest
    from xcoin_trading.backtest.results import save_result
    from xcoin_trading.backtest.service import BacktestRequest, prepare

    strategy = visible_strategy(session, user.id, body.strategy_id)
    if strategy.builtin is None:
        raise ValidationError(
            "strategy_id",
            "is uploaded code: it is backtested in the sandbox through the Dagster backtest asset, not by the API",
        )
    if body.end < body.start:
        raise ValidationError("start", f"must not be after end ({body.end}), got {body.start}")
    resolution = body.resolution or strategy.resolution
    candles = ((body.end - body.start).days + 1) * 86_400_000 // resolution_ms(resolution)
    if candles > MAX_SYNC_CANDLES:
        raise ValidationError(
            "end", f"range has {candles} {resolution} candles; at most {MAX_SYNC_CANDLES} run through the API"
        )
    request = BacktestRequest(
        strategy=strategy.code,
        symbol=body.symbol or strategy.symbol,
        resolution=resolution,
        start=body.start,
        end=body.end,
        params=dict(body.params or {}),
        initial_capital=body.initial_capital,
        risk_per_trade=body.risk_per_trade,
        leverage=body.leverage,
        commission=body.commission,
        intrabar=body.intrabar,
    )
    began = time.perf_counter()
    _, config, resolved, params, frame, intrabar = prepare(request, settings)
    result = run_backtest(frame, resolved.strategy, params, config, intrabar_candles=intrabar)
    saved = save_result(
        result,
        strategy_id=strategy.id,
        user_id=user.id,
        context=request.context(),
        execution_time_ms=(time.perf_counter() - began) * 1000,
        settings=settings,
    )
    row = session.get_one(BacktestResult, saved.id)
    return convert.backtest(row)


@router.get("/history/{strategy_id}", response_model=BacktestHistoryOut, responses=NOT_FOUND)
def history(
    strategy_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    user: UserDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> BacktestHistoryOut:
    """The caller's backtests of a strategy they can see, newest first. The strategy's author also
    sees runs made without a user (CLI, Dagster)."""
    strategy = visible_strategy(session, user.id, strategy_id)
    mine = BacktestResult.user_id == user.id
    if strategy.author_id == user.id:
        mine = or_(mine, BacktestResult.user_id.is_(None))
    rows = session.scalars(
        select(BacktestResult)
        .where(BacktestResult.strategy_id == strategy_id, mine)
        .order_by(BacktestResult.created_at.desc(), BacktestResult.id.desc())
        .limit(limit)
    ).all()
    return BacktestHistoryOut(backtests=[convert.backtest(r) for r in rows])
