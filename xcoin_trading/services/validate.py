"""Input checks shared by the services: every failure names the field and the reason."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from xcoin_trading.errors import ValidationError

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def decimal_field(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValidationError(name, f"must be a number, got {value!r}")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError(name, f"must be a number, got {value!r}") from None
    if not number.is_finite():
        raise ValidationError(name, f"must be finite, got {value!r}")
    return number


def positive(name: str, value: Any) -> Decimal:
    number = decimal_field(name, value)
    if number <= 0:
        raise ValidationError(name, f"must be greater than 0, got {number}")
    return number


def in_range(name: str, value: Any, low: Decimal, high: Decimal) -> Decimal:
    """low < value <= high."""
    number = decimal_field(name, value)
    if not (low < number <= high):
        raise ValidationError(name, f"must be in ({low}, {high}], got {number}")
    return number


def positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"must be a whole number, got {value!r}")
    if value <= 0:
        raise ValidationError(name, f"must be at least 1, got {value}")
    if maximum is not None and value > maximum:
        raise ValidationError(name, f"must be at most {maximum}, got {value}")
    return value


def non_empty(name: str, value: Any, max_len: int | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "must not be empty")
    value = value.strip()
    if max_len is not None and len(value) > max_len:
        raise ValidationError(name, f"must be at most {max_len} characters, got {len(value)}")
    return value


def email(value: Any) -> str:
    address = non_empty("email", value, 320).lower()
    if not EMAIL_RE.match(address):
        raise ValidationError("email", f"is not a valid address: {address!r}")
    return address
