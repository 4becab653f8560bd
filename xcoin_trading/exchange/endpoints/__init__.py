"""Every CoinDCX endpoint, written once as a *plan* (`requests.py`) that the blocking and the async
client in `client.py` both run, grouped as the exchange's documentation groups them: public,
spot, futures, and the create-then-look-up that never creates an order twice (`idempotent.py`).
"""

from xcoin_trading.exchange.endpoints.idempotent import IdempotentCreate
from xcoin_trading.exchange.endpoints.public import MAX_CANDLES_PER_PAGE, PublicEndpoints
from xcoin_trading.exchange.endpoints.requests import (
    AsyncRequests,
    Call,
    Plan,
    Requests,
    Sleep,
    decode_reply,
    endpoint,
)

__all__ = [
    "MAX_CANDLES_PER_PAGE",
    "AsyncRequests",
    "Call",
    "Endpoints",
    "Plan",
    "Requests",
    "Sleep",
    "decode_reply",
    "endpoint",
]


class Endpoints(PublicEndpoints, IdempotentCreate):
    """Every endpoint; a client adds how it sends a `Call` and runs a plan (`_drive`)."""
