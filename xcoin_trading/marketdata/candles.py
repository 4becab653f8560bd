"""The lake's keys: which symbols and resolutions it stores (the frame itself: `xcoin_trading.candles`)."""

from __future__ import annotations

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.catalog import default_market
from xcoin_trading.timeframes import TRADED_RESOLUTIONS, resolution_ms


def check_symbol(symbol: str) -> str:
    """A market the platform knows (spot `BTCUSDT` or futures `B-BTC_USDT`); raises otherwise."""
    if not isinstance(symbol, str) or not symbol:
        raise ValidationError("symbol", f"must be a market symbol such as BTCUSDT, got {symbol!r}")
    default_market(symbol)
    return symbol


def check_resolution(resolution: str) -> str:
    """A resolution the lake stores (the traded ones); raises naming the allowed values."""
    resolution_ms(resolution)
    if resolution not in TRADED_RESOLUTIONS:
        raise ValidationError(
            "resolution",
            f"must be one of {', '.join(TRADED_RESOLUTIONS)} (stored in the lake), got {resolution!r}",
        )
    return resolution
