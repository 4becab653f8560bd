"""Request and response bodies, with the seeds' camelCase field names on the wire.

Requests forbid unknown fields and carry their constraints in the schema (so the OpenAPI document
says what is accepted). Money leaves as decimal strings, never floats; it enters as a number or a
decimal string with at most 18 decimal places (the store's NUMERIC(38, 18)).
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from xcoin_trading.exchange.markets import FUTURES_MARKETS, SPOT_MARKETS
from xcoin_trading.services.strategies import MAX_LOOKBACK
from xcoin_trading.services.subscriptions import MAX_POSITIONS
from xcoin_trading.strategy.builtin import BUILTIN_STRATEGIES
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

MAX_ID = 2**63 - 1  # BIGINT: larger ids cannot exist, and would overflow the driver
NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold NUL
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"

# Strict: a JSON boolean is not a number and "2" is not an integer; 2.0 (a Decimal here) is refused too.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")]
Symbol = Literal[tuple([*SPOT_MARKETS, *FUTURES_MARKETS])]  # type: ignore[valid-type]
Resolution = Literal[TRADED_RESOLUTIONS]  # type: ignore[valid-type]
Builtin = Literal[BUILTIN_STRATEGIES]  # type: ignore[valid-type]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=NOT_BLANK)]
MONEY_MAX = Decimal("1e15")


MONEY_STRING = r"^[0-9]{1,15}(\.[0-9]{1,18})?$"


def _decimal_string(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(MONEY_STRING, value):
        raise ValueError("must be a decimal number such as 1000.50")
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


def money_field(le: int | None = None) -> Any:
    """A positive amount: a JSON number (parsed exactly, see `app.DecimalRoute`) or a decimal string,
    at most 18 decimal places (the store's precision; Postgres would round more silently)."""
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
    if le is None:
        number["exclusiveMaximum"] = float(MONEY_MAX)
    else:
        number["maximum"] = le
    schema = {"anyOf": [number, {"type": "string", "pattern": MONEY_STRING}]}
    bounds = (
        Field(gt=0, lt=MONEY_MAX, decimal_places=18) if le is None else Field(gt=0, le=le, decimal_places=18)
    )
    return (BeforeValidator(_decimal_string), bounds, WithJsonSchema(schema))


class Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(BaseModel):
    error: str
    details: list[str] | None = None


# ---- auth -----------------------------------------------------------------------------------


class RegisterRequest(Request):
    email: Email
    password: Annotated[str, StringConstraints(min_length=8, max_length=1024)]
    name: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None


class LoginRequest(Request):
    email: Annotated[str, StringConstraints(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, StringConstraints(max_length=1024)]


class UserOut(Response):
    id: int
    email: str
    name: str | None
    oauth_provider: str | None
    created_at: datetime


class TokenOut(Response):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="seconds until the token expires")
    user: UserOut


class OAuthProvidersOut(Response):
    providers: list[str]


class OAuthStartOut(Response):
    authorization_url: str
    state: str


# ---- broker ---------------------------------------------------------------------------------

# Exchange keys travel in HTTP headers: printable ASCII, no spaces.
KeyText = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]


class BrokerKeysRequest(Request):
    api_key: KeyText
    api_secret: KeyText
    broker: Literal["coindcx"] = "coindcx"


class BrokerKeyOut(Response):
    id: int
    broker: str
    api_key: str = Field(description="masked: only the last four characters are shown")
    is_active: bool
    connected_at: datetime
    last_tested_at: datetime | None


class BrokerStatusOut(Response):
    connected: bool
    broker: str
    api_key: str | None = Field(description="masked")
    connected_at: datetime | None
    last_tested_at: datetime | None
    active_subscriptions: int


class BalanceOut(Response):
    currency: str
    balance: str
    locked_balance: str


class BrokerTestOut(Response):
    success: bool
    balances: list[BalanceOut]


class MessageOut(Response):
    success: bool = True
    message: str


# ---- strategies -----------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
Source = Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024, pattern=NOT_BLANK)]
Description = Annotated[str, StringConstraints(max_length=5000, pattern=NO_NUL)]
Version = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NOT_BLANK)]


def _plain_numbers(value: Any) -> Any:
    """Strategy parameters are plain JSON numbers (the exact-decimal body parser gives Decimals)."""
    if isinstance(value, Decimal):
        if "." not in str(value) and "E" not in str(value).upper():
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"parameter value {value} is out of range")
        return number
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("parameter values cannot contain NUL characters")
    if isinstance(value, dict):
        if any("\x00" in k for k in value):
            raise ValueError("parameter names cannot contain NUL characters")
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


Params = Annotated[dict[str, Any], Field(max_length=50), AfterValidator(_plain_numbers)]
Tags = Annotated[list[Tag], Field(max_length=20)]


def _exactly_one_code_source(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [
        {"required": ["source"], "properties": {"source": {"type": "string"}}},
        {"required": ["builtin"], "properties": {"builtin": {"type": "string"}}},
    ]


class StrategyCreate(Request):
    model_config = ConfigDict(json_schema_extra=_exactly_one_code_source)

    name: Name
    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{1,99}$")]
    symbol: Symbol
    resolution: Resolution
    source: Source | None = Field(None, description="Python source defining signals(candles, params)")
    builtin: Builtin | None = Field(None, description="or the name of a built-in strategy")
    params: Params = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)
    lookback: Int = Field(200, ge=1, le=MAX_LOOKBACK)
    is_public: Bool = False
    description: Description | None = None
    version: Version = "1.0.0"


class StrategyUpdate(Request):
    name: Name | None = None
    symbol: Symbol | None = None
    resolution: Resolution | None = None
    source: Source | None = None
    builtin: Builtin | None = None
    params: Params | None = None
    tags: Tags | None = None
    lookback: Int | None = Field(None, ge=1, le=MAX_LOOKBACK)
    is_public: Bool | None = None
    is_active: Bool | None = None
    description: Description | None = None
    version: Version | None = None


class StrategyOut(Response):
    id: int
    name: str
    code: str
    description: str | None
    author_id: int
    is_owner: bool
    version: str
    symbol: str
    resolution: str
    lookback: int
    builtin: str | None
    source: str | None = Field(description="the owner's source; null for other users")
    params: dict[str, Any]
    tags: list[str]
    is_active: bool
    is_public: bool
    subscriber_count: int
    validation_status: str
    validation_errors: list[str] | None
    validated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class StrategyListOut(Response):
    strategies: list[StrategyOut]
    total: int


# ---- subscriptions --------------------------------------------------------------------------

Capital = Annotated[Decimal, *money_field()]
Risk = Annotated[Decimal, *money_field(le=1)]
Leverage = Annotated[Decimal, *money_field(le=125)]
Multiplier = Annotated[Decimal, *money_field(le=1000)]


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


# ---- positions and orders -------------------------------------------------------------------


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


# ---- backtests ------------------------------------------------------------------------------


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
    commission: Annotated[Decimal, Field(ge=0, lt=1, decimal_places=18), BeforeValidator(_decimal_string)] = (
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


# ---- health ---------------------------------------------------------------------------------


class CheckOut(Response):
    status: Literal["ok", "error", "not_configured"]
    latency_ms: float | None = None
    detail: str | None = None


class HealthOut(Response):
    status: Literal["ok", "degraded", "error"]
    checks: dict[str, CheckOut]
