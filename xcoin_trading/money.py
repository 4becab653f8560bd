"""Exact money: decimals from JSON/float/str inputs and decimals as plain digit strings.

Amounts never pass through binary floats (`0.1` becomes `Decimal("0.1")`, not 0.1000000000000000055…),
and trimming is string work: `normalize()`/`quantize()` round to the decimal context's 28
significant digits, and the store holds up to 38.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, overload


def to_decimal(value: Any) -> Decimal:
    """Exact decimal from a JSON number or string (floats go through repr, never binary)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def decimal_or(value: Any, default: Decimal = Decimal(0)) -> Decimal:
    """`to_decimal`, lenient: `None`, "" or an unreadable value → `default`."""
    if value is None or value == "":
        return default
    try:
        return to_decimal(value)
    except (InvalidOperation, ValueError):
        return default


def optional_decimal(value: Any) -> Decimal | None:
    """`decimal_or`, keeping "absent" (`None` or "") as None."""
    return None if value is None or value == "" else decimal_or(value)


@overload
def plain(value: Decimal | int) -> str: ...
@overload
def plain(value: None) -> None: ...
@overload
def plain(value: Decimal | int | None) -> str | None: ...
def plain(value: Decimal | int | None) -> str | None:
    """The exact digits without exponent or trailing zeros (`12.500` → "12.5"), None for None;
    raises ValueError on NaN/infinity, which is no amount."""
    if value is None:
        return None
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite amount")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def trimmed(value: Decimal | int | None) -> Decimal | None:
    """`plain` as a Decimal (12.500000000000000000 from DuckDB → 12.5); None stays None."""
    text = plain(value)
    return None if text is None else Decimal(text)
