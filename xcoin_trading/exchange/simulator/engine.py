"""The simulated exchange: markets, price feeds, clock, accounts and the desks that trade.

All state is mutated on the server's event loop thread only (handlers never await while they
change it), so there is no lock; every request does O(1) dictionary work plus its own order.

Clock: `manual` (replay; time moves only by `advance`, processing every base candle on the way)
or `realtime` (sim time = start + wall time elapsed × speed; due candles are processed lazily at
the next request). The signature timestamp window is always checked against the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from xcoin_trading.exchange.markets import FUTURES_MARKETS, SPOT_MARKETS, Market
from xcoin_trading.exchange.simulator.accounts import Account, SimError
from xcoin_trading.exchange.simulator.feed import START_PRICES, CandleFeed
from xcoin_trading.exchange.simulator.futures import FuturesDesk
from xcoin_trading.exchange.simulator.spot import SpotDesk
from xcoin_trading.exchange.simulator.venue import SimConfig
from xcoin_trading.exchange.simulator.wire import to_decimal
from xcoin_trading.timeframes import DAY_MS

DEFAULT_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


class SimClock:
    def __init__(self, start_ms: int, *, realtime: bool = False, speed: float = 1.0):
        self.realtime = realtime
        self.speed = speed
        self._start = int(start_ms)
        self._wall0 = time.time() * 1000

    def now(self) -> int:
        if not self.realtime:
            return self._start
        return int(self._start + (time.time() * 1000 - self._wall0) * self.speed)

    def set(self, ms: int) -> None:
        if self.realtime:
            raise SimError(422, "Invalid Request: the clock runs in real time; advance needs a manual clock")
        self._start = int(ms)


class _Feeds(dict):
    """Feeds by coin; a coin with a factory gets its feed the first time it is asked for (dozens of
    listed markets, each a month of 1m candles, would otherwise cost hundreds of MB up front).
    A generated feed is reproducible from (seed, coin), so when it is built does not matter."""

    def __init__(self, eager: dict[str, CandleFeed], factories: dict[str, Callable[[], CandleFeed]]):
        super().__init__(eager)
        self.factories = {c: f for c, f in factories.items() if c not in eager}
        self.on_new: Callable[[str, CandleFeed], None] = lambda coin, feed: None

    def __missing__(self, coin: str) -> CandleFeed:
        factory = self.factories.get(coin)
        if factory is None:
            raise KeyError(coin)
        feed = self[coin] = factory()
        self.on_new(coin, feed)
        return feed

    def coins(self) -> set[str]:
        return set(self) | set(self.factories)


class Exchange:
    def __init__(
        self,
        feeds: dict[str, CandleFeed],
        clock: SimClock,
        config: SimConfig | None = None,
        *,
        seed: int = 0,
        lazy_feeds: dict[str, Callable[[], CandleFeed]] | None = None,
    ):
        self.feeds = _Feeds(feeds, lazy_feeds or {})
        self.feeds.on_new = self._feed_added
        self.clock = clock
        self.config = config or SimConfig()
        self.seed = seed
        coins = self.feeds.coins()
        self.spot_markets: dict[str, Market] = {s: m for s, m in SPOT_MARKETS.items() if m.target in coins}
        self.futures_markets: dict[str, Market] = {
            p: m for p, m in FUTURES_MARKETS.items() if m.target in coins
        }
        self.pair_to_spot: dict[str, Market] = {m.pair: m for m in self.spot_markets.values()}
        self.accounts: dict[str, Account] = {}
        self._prices: dict[str, tuple[Market, int, Decimal]] = {}  # symbol -> (market, at, price)
        self.spot = SpotDesk(self)
        self.futures = FuturesDesk(self)
        self._processed: dict[str, int] = {c: f.closed_count(clock.now()) for c, f in feeds.items()}
        self._synced_to = clock.now()
        self._next_due = self._compute_next_due()

    def _feed_added(self, coin: str, feed: CandleFeed) -> None:
        self._processed[coin] = feed.closed_count(self._synced_to)  # nothing traded on it before
        self._next_due = self._compute_next_due()

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def random_walk(
        cls,
        *,
        seed: int = 0,
        start_ms: int | None = None,
        history_days: float = 3,
        future_days: float = 7,
        coins: tuple[str, ...] | None = None,
        realtime: bool = False,
        speed: float = 1.0,
        config: SimConfig | None = None,
    ) -> Exchange:
        """Seeded 1m random walks for every listed coin, `history_days` before the start."""
        on_wall_clock = start_ms is None and realtime  # the clock must read the wall time, not lag it
        if start_ms is None:
            start_ms = int(time.time() * 1000) if realtime else DEFAULT_START_MS
        start_ms -= start_ms % 60_000
        first, last = int(start_ms - history_days * DAY_MS), int(start_ms + future_days * DAY_MS)
        walks = {m.target: _walk(m, first, last, seed) for m in SPOT_MARKETS.values()}
        eager = coins or tuple(c for c in walks if c in START_PRICES)  # the rest on first use
        feeds = {c: walks[c]() for c in eager}
        lazy = {} if coins else walks
        clock_start = int(time.time() * 1000) if on_wall_clock else start_ms
        return cls(
            feeds, SimClock(clock_start, realtime=realtime, speed=speed), config, seed=seed, lazy_feeds=lazy
        )

    @classmethod
    def replay(
        cls,
        files: dict[str, str | Path],
        *,
        start_ms: int | None = None,
        warmup_days: float = 1,
        seed: int = 0,
        other_coins: bool = True,
        realtime: bool = False,
        speed: float = 1.0,
        config: SimConfig | None = None,
    ) -> Exchange:
        """Replay candle files ({"BTCUSDT": path}); other listed coins get seeded walks over the same span.

        The clock starts `warmup_days` after the first candle (so strategies have history) unless
        `start_ms` is given.
        """
        feeds: dict[str, CandleFeed] = {}
        for symbol, path in files.items():
            market = SPOT_MARKETS.get(symbol)
            if market is None:
                raise SimError(
                    422, f"Invalid Request: {symbol!r} is not a simulator market ({', '.join(SPOT_MARKETS)})"
                )
            feeds[market.target] = CandleFeed.from_parquet(path, market.target)
        first = min(f.first_open_ms for f in feeds.values())
        last = max(f.last_close_ms for f in feeds.values())
        if start_ms is None:
            start_ms = min(first + int(warmup_days * DAY_MS), last)
        lazy = {m.target: _walk(m, first, last, seed) for m in SPOT_MARKETS.values()} if other_coins else {}
        return cls(
            feeds, SimClock(start_ms, realtime=realtime, speed=speed), config, seed=seed, lazy_feeds=lazy
        )

    # ---- time -------------------------------------------------------------------------------------

    def _compute_next_due(self) -> int:
        due = [int(f.close_time[n]) for c, f in self.feeds.items() if (n := self._processed[c]) < len(f)]
        return min(due) if due else 2**62

    def now(self) -> int:
        """Simulator time in ms; in real-time mode also processes candles that closed since."""
        t = self.clock.now()
        if t >= self._next_due:
            self._process(t)
        return t

    def advance(self, to_ms: int) -> dict[str, Any]:
        current = self.clock.now()
        if to_ms < current:
            raise SimError(422, f"Invalid Request: cannot move the clock back from {current} to {to_ms}")
        end = max(f.last_close_ms for f in self.feeds.values())
        if to_ms > end:
            raise SimError(422, f"Invalid Request: {to_ms} is past the end of the price feed ({end})")
        self.clock.set(to_ms)
        candles = self._process(to_ms)
        return {"now_ms": to_ms, "candles": candles}

    def _process(self, to_ms: int) -> int:
        """Run every base candle that closed in (last processed, to_ms] through the desks."""
        processed = 0
        futures = self.futures
        for coin, feed in list(self.feeds.items()):  # a desk may bring another coin's feed in
            start, end = self._processed[coin], feed.closed_count(to_ms)
            if end <= start:
                continue
            symbol = f"{coin}USDT"
            pair = f"B-{coin}_USDT"
            spot_work = self.spot.has_work(symbol)
            futures_work = futures.has_work(pair)
            if spot_work or futures_work:
                for i in range(start, end):
                    o, h, lo, c, v = feed.open[i], feed.high[i], feed.low[i], feed.close[i], feed.volume[i]
                    close_ms = int(feed.close_time[i])
                    if spot_work:
                        self.spot.on_candle(symbol, o, h, lo, v, close_ms)
                    if futures_work:
                        futures.on_candle(pair, o, h, lo, c, close_ms)
            processed += end - start
            self._processed[coin] = end
        self._synced_to = to_ms
        self._next_due = self._compute_next_due()
        return processed

    # ---- prices -----------------------------------------------------------------------------------

    def feed_for(self, market: Market) -> CandleFeed:
        return self.feeds[market.target]

    def price(self, market: Market) -> Decimal:
        """Current price on the market's tick (close of the newest closed base candle).

        Kept per market until the clock moves: a fan-out asks thousands of times at one instant
        (a numpy search and Decimal rounding each)."""
        now = self.now()
        cached = self._prices.get(market.symbol)
        if cached is not None and cached[0] is market and cached[1] == now:
            return cached[2]
        price = market.round_price(to_decimal(self.feed_for(market).price_at(now)))
        self._prices[market.symbol] = (market, now, price)
        return price

    def market_by_pair(self, pair: str) -> Market:
        market = self.pair_to_spot.get(pair) or self.futures_markets.get(pair)
        if market is None:
            raise SimError(422, "Currency pair is not valid")
        return market

    # ---- accounts ---------------------------------------------------------------------------------

    def add_account(self, api_key: str, api_secret: str, balances: dict[str, Any] | None = None) -> Account:
        if not api_key or not api_secret:
            raise SimError(422, "Invalid Request: api_key and api_secret are required")
        if api_key in self.accounts:
            raise SimError(409, f"account {api_key[:4]}… already exists")
        acct = Account(api_key, api_secret.encode(), number=len(self.accounts) + 1)
        now = self.clock.now()
        for currency, amount in (balances or {}).items():
            value = Decimal(str(amount))
            if not value.is_finite() or value < 0:
                raise SimError(422, f"Invalid Request: balance of {currency} must be >= 0")
            acct.change(currency, value, "deposit", now)
        self.accounts[api_key] = acct
        return acct

    def account(self, api_key: str) -> Account:
        acct = self.accounts.get(api_key)
        if acct is None:
            raise SimError(404, "account not found")
        return acct

    def state(self) -> dict[str, Any]:
        return {
            "now_ms": self.clock.now(),
            "clock": "realtime" if self.clock.realtime else "manual",
            "speed": self.clock.speed,
            "seed": self.seed,
            "accounts": len(self.accounts),
            "feeds": {
                c: {
                    "source": f.source,
                    "base_interval": f.base_interval,
                    "first_open_ms": f.first_open_ms,
                    "last_close_ms": f.last_close_ms,
                }
                for c, f in self.feeds.items()
            },
            "spot_markets": list(self.spot_markets),
            "futures_markets": list(self.futures_markets),
            "config": self.config.to_json(),
        }


def _walk(market: Market, first_ms: int, last_ms: int, seed: int) -> Callable[[], CandleFeed]:
    return lambda: CandleFeed.random_walk(
        market.target, first_ms, last_ms, seed=seed, decimals=market.price_precision
    )
