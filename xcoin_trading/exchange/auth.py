"""CoinDCX request signing: HMAC-SHA256 (hex) of the exact body bytes that are sent.

The body is compact JSON (no spaces, key order kept, ASCII); prices and quantities travel as
decimal strings so no float exponent (`1e-05`) can make the signed bytes ambiguous.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot serialise {type(value).__name__} into a CoinDCX request body")


# Built once: `json.dumps` with options builds a new encoder per call, and a candle signs tens of
# thousands of bodies. Same options, so the same bytes.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=_json_default)


def compact_json(body: dict[str, Any]) -> bytes:
    """The bytes to sign and send: `{"a":1,"b":"x"}` with key order kept."""
    return _ENCODER.encode(body).encode()


def sign(secret: str | bytes, payload: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `payload` keyed with the API secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def mask_key(api_key: str) -> str:
    """Enough of a key to tell accounts apart in logs, never enough to use it."""
    return f"{api_key[:4]}…{api_key[-2:]}" if len(api_key) > 8 else "****"


@dataclass(frozen=True)
class Credentials:
    """An API key pair. `repr`/`str` show a masked key and never the secret."""

    api_key: str
    api_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_secret:
            from xcoin_trading.errors import ValidationError

            raise ValidationError("credentials", "need both an API key and an API secret")

    def headers(self, payload: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-AUTH-APIKEY": self.api_key,
            "X-AUTH-SIGNATURE": sign(self.api_secret, payload),
        }

    def __repr__(self) -> str:
        return f"Credentials(api_key={mask_key(self.api_key)!r}, api_secret='***')"

    __str__ = __repr__
