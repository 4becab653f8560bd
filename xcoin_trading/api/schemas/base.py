"""Request and response bodies: the shared base models and field types (one module per API area
beside this one), with the seeds' camelCase field names on the wire.

Requests forbid unknown fields and carry their constraints in the schema (so the OpenAPI document
says what is accepted). Money leaves as decimal strings, never floats; it enters as a number or a
decimal string with at most 18 decimal places (the store's NUMERIC(38, 18)).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel

from xcoin_trading.exchange.markets import FUTURES_MARKETS, SPOT_MARKETS
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
if TYPE_CHECKING:  # Literals built from the market/timeframe tables at run time: a str to a checker
    Symbol = str
    Resolution = str
    Builtin = str
else:
    Symbol = Literal[tuple([*SPOT_MARKETS, *FUTURES_MARKETS])]
    Resolution = Literal[TRADED_RESOLUTIONS]
    Builtin = Literal[BUILTIN_STRATEGIES]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=NOT_BLANK)]
MONEY_MAX = Decimal("1e15")


MONEY_STRING = r"^[0-9]{1,15}(\.[0-9]{1,18})?$"


def decimal_string(value: Any) -> Any:
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
    return (BeforeValidator(decimal_string), bounds, WithJsonSchema(schema))


Capital = Annotated[Decimal, *money_field()]
Risk = Annotated[Decimal, *money_field(le=1)]
Leverage = Annotated[Decimal, *money_field(le=125)]
Multiplier = Annotated[Decimal, *money_field(le=1000)]


class Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(BaseModel):
    error: str
    details: list[str] | None = None


class MessageOut(Response):
    success: bool = True
    message: str
