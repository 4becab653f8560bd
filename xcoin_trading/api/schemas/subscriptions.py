"""Bodies of the subscription endpoints: money fields as exact decimals with their bounds."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import Field

from xcoin_trading.api.schemas.base import Capital, Id, Int, Leverage, Multiplier, Request, Response, Risk
from xcoin_trading.services.subscriptions import MAX_POSITIONS


class SubscribeRequest(Request):
    capital: Capital
    risk_per_trade: Risk
    leverage: Leverage = Decimal(1)
    max_positions: Int = Field(1, ge=1, le=MAX_POSITIONS)
    max_daily_loss: Capital | None = None
    sl_atr_multiplier: Multiplier | None = None
    tp_atr_multiplier: Multiplier | None = None
    broker_credential_id: Id | None = None


class SubscriptionUpdate(Request):
    capital: Capital | None = None
    risk_per_trade: Risk | None = None
    leverage: Leverage | None = None
    max_positions: Int | None = Field(None, ge=1, le=MAX_POSITIONS)
    max_daily_loss: Capital | None = None
    sl_atr_multiplier: Multiplier | None = None
    tp_atr_multiplier: Multiplier | None = None


class SubscriptionOut(Response):
    id: int
    strategy_id: int
    strategy_name: str
    strategy_code: str
    broker_credential_id: int | None
    capital: str
    risk_per_trade: str
    leverage: str
    max_positions: int
    max_daily_loss: str | None
    sl_atr_multiplier: str | None
    tp_atr_multiplier: str | None
    is_active: bool
    is_paused: bool
    subscribed_at: datetime
    paused_at: datetime | None
    unsubscribed_at: datetime | None
    total_trades: int
    winning_trades: int
    losing_trades: int
    total_pnl: str


class SubscriptionListOut(Response):
    subscriptions: list[SubscriptionOut]


class SubscriptionStatsOut(Response):
    subscription_id: int
    strategy_id: int
    total_trades: int
    winning_trades: int
    losing_trades: int
    win_rate: float
    total_pnl: str
    capital: str
    is_active: bool
    is_paused: bool
