"""The simulator's public market-data routes: markets, ticker, candles, order book, public trades.

Built from the feed the engine replays; the ticker and the market list are cached as bytes (the
ticker once per simulated second, as the exchange generates it).
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any, overload

from xcoin_trading.exchange.simulator.accounts import SimError
from xcoin_trading.exchange.simulator.engine import Exchange
from xcoin_trading.exchange.simulator.wire import dumps
from xcoin_trading.timeframes import DAY_MS, EXCHANGE_INTERVALS


class PublicRoutes:
    def __init__(self, exchange: Exchange):
        self.ex = exchange
        self._ticker_cache: tuple[int, bytes] | None = None
        self._details_cache: bytes | None = None

    def routes(self) -> dict[str, tuple[str, str, Any]]:
        return {
            "/exchange/ticker": ("public", "", self.ticker),
            "/exchange/v1/markets": ("public", "", lambda q: list(self.ex.spot_markets)),
            "/exchange/v1/markets_details": ("public", "", self.markets_details),
            "/market_data/candles": ("public", "", self.candles),
            "/market_data/orderbook": ("public", "", self.order_book),
            "/market_data/trade_history": ("public", "", self.public_trades),
        }

    def markets_details(self, query: Any) -> bytes:
        """The bundled CoinDCX rows of the markets it trades, plus the listed ones it does not
        (inactive, INR-quoted): a client sees the list and statuses a real account sees."""
        if self._details_cache is None:
            from xcoin_trading.exchange.markets import BUNDLED, SPOT_MARKETS

            rows = [
                r
                for r in BUNDLED["spot"]
                if r["symbol"] in self.ex.spot_markets or r["symbol"] not in SPOT_MARKETS
            ]
            self._details_cache = dumps(rows)
        return self._details_cache

    def ticker(self, query: Any) -> bytes:
        now = self.ex.now()
        second = now // 1000  # "generated once per second"
        if self._ticker_cache is None or self._ticker_cache[0] != second:
            rows = []
            for market in self.ex.spot_markets.values():
                feed = self.ex.feed_for(market)
                high, low, volume, then = feed.window_stats(now, DAY_MS)
                price = self.ex.price(market)
                tick = market.tick
                change = (float(price) - then) / then * 100 if then else 0.0
                rows.append(
                    {
                        "market": market.symbol,
                        "change_24_hour": f"{change:.3f}",
                        "high": f"{high}",
                        "low": f"{low}",
                        "volume": f"{volume * float(price):.2f}",
                        "last_price": format(price, "f"),
                        "bid": format(price - tick, "f"),
                        "ask": format(price + tick, "f"),
                        "timestamp": second,
                    }
                )
            self._ticker_cache = (second, dumps(rows))
        return self._ticker_cache[1]

    def candles(self, query: Any) -> list[dict[str, Any]]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        interval = query.get("interval", "")
        if interval not in EXCHANGE_INTERVALS:
            raise SimError(422, f"Invalid interval: must be one of {', '.join(EXCHANGE_INTERVALS)}")
        feed = self.ex.feed_for(market)
        if not feed.supports(interval):
            raise SimError(
                422, f"Invalid interval: {interval} is finer than the simulator's feed ({feed.base_interval})"
            )
        limit = _int_param(query, "limit", 500)
        start, end = _int_param(query, "startTime", None), _int_param(query, "endTime", None)
        return feed.candles(interval, self.ex.now(), start, end, min(max(limit, 1), 1000))

    def order_book(self, query: Any) -> dict[str, Any]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        now = self.ex.now()
        price = self.ex.price(market)
        tick = market.tick
        spread = max(tick, market.round_price(price * Decimal("0.0001")))
        seed = zlib.crc32(f"{market.pair}:{now // 1000}".encode())
        bids, asks = {}, {}
        for i in range(1, 21):
            qty = (
                market.round_quantity(Decimal(((seed >> (i % 24)) % 97) + 3) * market.step * 10 * i)
                or market.step
            )
            bids[format(market.round_price(price - spread * i), "f")] = format(qty, "f")
            asks[format(market.round_price(price + spread * i), "f")] = format(qty, "f")
        return {"timestamp": now, "bids": bids, "asks": asks}

    def public_trades(self, query: Any) -> list[dict[str, Any]]:
        market = self.ex.market_by_pair(query.get("pair", ""))
        limit = min(max(_int_param(query, "limit", 30), 1), 500)
        feed = self.ex.feed_for(market)
        n = feed.closed_count(self.ex.now())
        out = []
        for i in range(n - 1, max(n - limit, 0) - 1, -1):
            out.append(
                {
                    "p": float(feed.close[i]),
                    "q": float(round(feed.volume[i] / 10, 8)),
                    "s": market.symbol,
                    "T": int(feed.close_time[i]) - 1,
                    "m": bool(feed.close[i] < feed.open[i]),
                }
            )
        return out


@overload
def _int_param(query: Any, name: str, default: int) -> int: ...


@overload
def _int_param(query: Any, name: str, default: None) -> int | None: ...


def _int_param(query: Any, name: str, default: int | None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SimError(422, f"Invalid Request: {name} must be an integer") from None
