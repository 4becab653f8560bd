"""Bodies of the strategy endpoints; a strategy is exactly one of uploaded source or a built-in."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from xcoin_trading.api.schemas.base import (
    NO_NUL,
    NOT_BLANK,
    Bool,
    Builtin,
    Int,
    Request,
    Resolution,
    Response,
    Symbol,
    Tag,
)
from xcoin_trading.services.strategies import MAX_LOOKBACK

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
