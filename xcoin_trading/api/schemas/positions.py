"""Bodies of the positions, orders and P&L endpoints (figures as decimal strings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from xcoin_trading.api.schemas.base import Response


class PositionOut(Response):
    trade_id: int
    subscription_id: int
    strategy_id: int
    strategy_name: str
    symbol: str
    market_type: str
    side: str
    quantity: str | None
    leverage: str | None
    entry_price: str | None
    stop_loss: str | None
    take_profit: str | None
    entry_fee: str | None
    entry_time: datetime | None
    current_price: str | None
    unrealized_pnl: str | None
    unrealized_pnl_pct: str | None
    problems: list[str] = Field(
        default_factory=list, description="fields of this stored row that could not be read (they are null)"
    )


class PositionsSummaryOut(Response):
    open_positions: int
    total_notional: str | None = Field(
        description="sum of entry price x quantity; null when a row is unreadable"
    )
    total_margin: str | None = Field(description="sum of notional / leverage")
    total_unrealized_pnl: str | None = Field(description="null when any price is unavailable")
    prices_available: bool
    price_error: str | None


class PositionsOut(Response):
    positions: list[PositionOut]
    summary: PositionsSummaryOut


class OrderOut(Response):
    id: int
    subscription_id: int | None
    strategy_id: int | None
    trade_id: int | None
    leg: str
    client_order_id: str
    exchange_order_id: str | None
    market: str
    side: str
    order_type: str
    price: str | None
    stop_price: str | None
    quantity: str | None
    filled_quantity: str | None
    avg_price: str | None
    fee: str | None
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    problems: list[str] = Field(
        default_factory=list, description="fields of this stored row that could not be read (they are null)"
    )


class PaginationOut(Response):
    page: int
    limit: int
    total: int
    total_pages: int


class OrdersSummaryOut(Response):
    total_orders: int
    filled_orders: int
    pending_orders: int
    cancelled_orders: int
    rejected_orders: int
    total_volume: str | None = Field(description="sum of filled quantity x average fill price")
    total_fees: str | None


class OrdersOut(Response):
    orders: list[OrderOut]
    pagination: PaginationOut
    summary: OrdersSummaryOut


class PnlSummaryOut(Response):
    """The seed's P&L summary (analytics); money as exact decimal strings, ratios as numbers."""

    model_config = ConfigDict(extra="allow")

    period: str
    as_of: str | None = Field(None, description="when the analytics models were last built")
    total_realized_pnl: str
    total_unrealized_pnl: str
    total_pnl: str
    total_trades: int
    win_rate: float
    active_strategies: int
    average_win: str
    profit_factor: float | None
    daily_pnl: list[dict[str, Any]]
    strategy_performance: list[dict[str, Any]]
