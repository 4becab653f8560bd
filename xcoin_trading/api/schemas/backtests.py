"""Bodies of the backtest endpoints; days bounded so the day arithmetic cannot overflow."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from xcoin_trading.api.schemas.base import (
    Capital,
    Id,
    Leverage,
    Request,
    Resolution,
    Response,
    Risk,
    Symbol,
    decimal_string,
)
from xcoin_trading.api.schemas.strategies import Params

# Candles exist from 2010 on; far dates would overflow the day arithmetic (9999-12-31 + 1 day).
FIRST_DAY, LAST_DAY = date(2010, 1, 1), date(2100, 12, 31)
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]


class BacktestRunRequest(Request):
    strategy_id: Id
    start: Day
    end: Day
    symbol: Symbol | None = Field(None, description="default: the strategy's symbol")
    resolution: Resolution | None = Field(None, description="default: the strategy's resolution")
    initial_capital: Capital = Decimal(10_000)
    risk_per_trade: Risk = Decimal("0.02")
    leverage: Leverage = Decimal(1)
    commission: Annotated[Decimal, Field(ge=0, lt=1, decimal_places=18), BeforeValidator(decimal_string)] = (
        Decimal("0.001")
    )
    params: Params | None = None
    intrabar: Literal["sl_first", "tp_first", "1m"] = "sl_first"


class BacktestOut(Response):
    id: int
    strategy_id: int | None
    strategy_code: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    execution_time_ms: int
    created_at: datetime


class BacktestHistoryOut(Response):
    backtests: list[BacktestOut]
