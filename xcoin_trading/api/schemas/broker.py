"""Bodies of the broker endpoints: exchange keys (never echoed), their status and balances."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from xcoin_trading.api.schemas.base import Request, Response

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
