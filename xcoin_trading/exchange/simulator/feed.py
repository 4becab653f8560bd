"""Price feed of one coin: base candles (a replayed Parquet file or a seeded random walk) and the
candles of every CoinDCX interval aggregated from them.

Simulator choices (real behaviour undocumented):
- Only candles whose base candles have closed by the simulator clock are served; a higher interval's
  newest candle may be partial (aggregated from its closed base candles), as an exchange serves the
  candle in progress. Nothing from the future leaks.
- `startTime`/`endTime` are inclusive; with `startTime` the earliest `limit` candles from it are
  returned (Binance semantics, the B- markets are Binance-routed), otherwise the newest `limit`.
  The list is sent newest first, as DOCS#candles says.
- An interval finer than the feed's base resolution is refused (422), never interpolated.
- The current price is the close of the newest closed base candle.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from xcoin_trading.exchange.markets import BUNDLED
from xcoin_trading.timeframes import DAY_MS, RESOLUTION_MS

_MONDAY0 = 4 * DAY_MS  # 1970-01-05 was a Monday

# Plausible starting prices for generated feeds (USDT).
START_PRICES = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "BNB": 600.0, "XRP": 0.6, "SUI": 1.5}
# Every other listed coin's level (feeds of these are generated on first use).
LISTED_PRICES = {c: float(p) for c, p in BUNDLED["start_prices"].items()} | START_PRICES


@dataclass
class _Agg:
    starts: np.ndarray  # bucket open times
    first: np.ndarray  # index of the first base candle in each bucket
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def bucket_starts(times: np.ndarray, interval: str) -> np.ndarray:
    """Open time of the `interval` candle containing each ms time (same rules as timeframes.floor_ms)."""
    if interval == "1M":
        return (
            times.astype("datetime64[ms]").astype("datetime64[M]").astype("datetime64[ms]").astype(np.int64)
        )
    step = RESOLUTION_MS[interval]
    if interval == "1w":
        return times - ((times - _MONDAY0) % step)
    return times - (times % step)


class CandleFeed:
    """Base candles of one coin as numpy arrays (float prices; Decimal conversion at the edge)."""

    def __init__(
        self,
        coin: str,
        base_interval: str,
        open_time: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        source: str = "random-walk",
    ):
        if len(open_time) == 0:
            raise ValueError(f"feed for {coin} has no candles")
        self.coin = coin
        self.base_interval = base_interval
        self.base_ms = RESOLUTION_MS[base_interval]
        self.open_time = np.ascontiguousarray(open_time, dtype=np.int64)
        self.close_time = self.open_time + self.base_ms
        self.open = np.ascontiguousarray(open_, dtype=np.float64)
        self.high = np.ascontiguousarray(high, dtype=np.float64)
        self.low = np.ascontiguousarray(low, dtype=np.float64)
        self.close = np.ascontiguousarray(close, dtype=np.float64)
        self.volume = np.ascontiguousarray(volume, dtype=np.float64)
        self.source = source
        self._aggs: dict[str, _Agg] = {}

    def __len__(self) -> int:
        return len(self.open_time)

    @property
    def first_open_ms(self) -> int:
        return int(self.open_time[0])

    @property
    def last_close_ms(self) -> int:
        return int(self.close_time[-1])

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def random_walk(
        cls,
        coin: str,
        start_ms: int,
        end_ms: int,
        *,
        seed: int = 0,
        base_interval: str = "1m",
        start_price: float | None = None,
        decimals: int = 2,
        volatility: float = 0.0008,
    ) -> CandleFeed:
        """Geometric random walk, reproducible from (seed, coin)."""
        step = RESOLUTION_MS[base_interval]
        first = start_ms - start_ms % step
        times = np.arange(first, end_ms, step, dtype=np.int64)
        n = len(times)
        rng = np.random.default_rng([seed, zlib.crc32(coin.encode())])
        price0 = start_price or LISTED_PRICES.get(coin, 10.0)
        sigma = volatility * np.sqrt(step / 60_000)
        log_close = np.log(price0) + np.cumsum(rng.normal(0.0, sigma, n))
        close = np.exp(log_close)
        open_ = np.concatenate(([price0], close[:-1]))
        wick = np.abs(rng.normal(0.0, sigma / 2, (2, n)))
        high = np.maximum(open_, close) * (1 + wick[0])
        low = np.minimum(open_, close) * (1 - wick[1])
        volume = rng.lognormal(0.0, 0.5, n) * 1000.0 / price0 * (step / 60_000)
        r = lambda a: np.round(a, decimals)  # noqa: E731
        o, h, lo, c = r(open_), r(high), r(low), r(close)
        h = np.maximum(h, np.maximum(o, c))
        lo = np.minimum(lo, np.minimum(o, c))
        return cls(
            coin, base_interval, times, o, h, lo, c, np.round(volume, 6), source=f"random-walk(seed={seed})"
        )

    @classmethod
    def from_parquet(cls, path: str | Path, coin: str, base_interval: str | None = None) -> CandleFeed:
        """A candle file as in ../shared/data (`open_time` timestamp[ms, UTC] or int ms, OHLCV floats)."""
        frame = pl.read_parquet(path, columns=["open_time", "open", "high", "low", "close", "volume"])
        if frame.schema["open_time"] != pl.Int64:
            frame = frame.with_columns(pl.col("open_time").dt.epoch("ms").alias("open_time"))
        frame = frame.sort("open_time").unique("open_time", keep="first", maintain_order=True)
        times = frame["open_time"].to_numpy()
        if base_interval is None:
            diffs = np.diff(times[: min(len(times), 1000)])
            smallest = int(diffs.min()) if len(diffs) else RESOLUTION_MS["1m"]
            base_interval = next((k for k, v in RESOLUTION_MS.items() if v == smallest), "1m")
        return cls(
            coin,
            base_interval,
            times,
            frame["open"].to_numpy(),
            frame["high"].to_numpy(),
            frame["low"].to_numpy(),
            frame["close"].to_numpy(),
            frame["volume"].to_numpy(),
            source=str(Path(path).name),
        )

    # ---- lookups -------------------------------------------------------------------------------

    def closed_count(self, now_ms: int) -> int:
        """How many base candles have closed at `now_ms`."""
        return int(np.searchsorted(self.close_time, now_ms, side="right"))

    def price_at(self, now_ms: int) -> float:
        n = self.closed_count(now_ms)
        return float(self.close[n - 1]) if n else float(self.open[0])

    def window_stats(self, now_ms: int, span_ms: int) -> tuple[float, float, float, float]:
        """(high, low, volume, price span_ms ago) over closed base candles in (now - span, now]."""
        n = self.closed_count(now_ms)
        if n == 0:
            p = float(self.open[0])
            return p, p, 0.0, p
        lo = int(np.searchsorted(self.close_time, now_ms - span_ms, side="right"))
        lo = min(lo, n - 1)
        return (
            float(self.high[lo:n].max()),
            float(self.low[lo:n].min()),
            float(self.volume[lo:n].sum()),
            float(self.open[lo]),
        )

    def _agg(self, interval: str) -> _Agg:
        agg = self._aggs.get(interval)
        if agg is None:
            starts_all = bucket_starts(self.open_time, interval)
            starts, first = np.unique(starts_all, return_index=True)
            last = np.concatenate((first[1:], [len(starts_all)])) - 1
            agg = _Agg(
                starts=starts,
                first=first,
                open=self.open[first],
                high=np.maximum.reduceat(self.high, first),
                low=np.minimum.reduceat(self.low, first),
                close=self.close[last],
                volume=np.add.reduceat(self.volume, first),
            )
            self._aggs[interval] = agg
        return agg

    def supports(self, interval: str) -> bool:
        step = RESOLUTION_MS[interval]
        return interval in ("1w", "1M") or (step >= self.base_ms and step % self.base_ms == 0)

    def candles(
        self, interval: str, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[dict[str, float | int]]:
        """Visible candles in [start, end] (inclusive), newest first, at most `limit`."""
        n = self.closed_count(now_ms)
        if n == 0 or limit <= 0:
            return []
        if interval == self.base_interval:
            times, o, h, lo, c, v = (
                a[:n] for a in (self.open_time, self.open, self.high, self.low, self.close, self.volume)
            )
        else:
            agg = self._agg(interval)
            k = int(np.searchsorted(agg.starts, self.open_time[n - 1], side="right"))
            times, o, h, lo, c, v = (
                a[:k] for a in (agg.starts, agg.open, agg.high, agg.low, agg.close, agg.volume)
            )
            # The newest bucket may still be forming: rebuild it from closed base candles only.
            f = int(agg.first[k - 1])
            end = int(agg.first[k]) if k < len(agg.starts) else len(self)
            if end > n:
                h, lo, c, v = h.copy(), lo.copy(), c.copy(), v.copy()
                h[k - 1] = self.high[f:n].max()
                lo[k - 1] = self.low[f:n].min()
                c[k - 1] = self.close[n - 1]
                v[k - 1] = self.volume[f:n].sum()
        i0 = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
        i1 = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="right"))
        if i1 <= i0:
            return []
        if start_ms is not None:
            i1 = min(i1, i0 + limit)
        else:
            i0 = max(i0, i1 - limit)
        return [
            {
                "open": float(o[i]),
                "high": float(h[i]),
                "low": float(lo[i]),
                "volume": float(v[i]),
                "close": float(c[i]),
                "time": int(times[i]),
            }
            for i in range(i1 - 1, i0 - 1, -1)
        ]
