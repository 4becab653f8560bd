"""`/api/backtest`: run a backtest of a visible strategy, and the caller's backtest history."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from sqlalchemy import or_, select

from xcoin_trading.api import convert
from xcoin_trading.api import schemas as s
from xcoin_trading.api.deps import SessionDep, SettingsDep, UserDep
from xcoin_trading.api.errors import NotAvailableYet
from xcoin_trading.api.routing import NOT_FOUND, NOT_YET
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.services.strategies import visible_strategy
from xcoin_trading.store.models import BacktestResult

router = make_router(["backtests"], prefix="/api/backtest")


@router.post("/run", response_model=s.BacktestOut, responses={**NOT_FOUND, **NOT_YET})
def run(
    body: s.BacktestRunRequest, user: UserDep, session: SessionDep, settings: SettingsDep
) -> s.BacktestOut:
    """Runs synchronously and returns the stored result (see README for the size limit)."""
    visible_strategy(session, user.id, body.strategy_id)
    raise NotAvailableYet("running backtests through the API (stored backtest runs)")


@router.get("/history/{strategy_id}", response_model=s.BacktestHistoryOut, responses=NOT_FOUND)
def history(
    strategy_id: Annotated[int, Path(ge=1, le=s.MAX_ID)],
    user: UserDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> s.BacktestHistoryOut:
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
    return s.BacktestHistoryOut(backtests=[convert.backtest(r) for r in rows])
