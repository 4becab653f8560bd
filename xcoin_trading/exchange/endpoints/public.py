"""Public endpoints (no key): markets and their cached lookup, tickers, candles, order book, trades."""

from __future__ import annotations

from typing import Any

import polars as pl

from xcoin_trading.candles import exchange_window
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.endpoints.requests import Call, Plan, Requests, endpoint
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.models import OrderBook, PublicTrade, Ticker
from xcoin_trading.timeframes import RESOLUTION_MS, resolution_ms

MAX_CANDLES_PER_PAGE = 1000


def _is_pair(name: str) -> bool:
    return "-" in name and "_" in name


class PublicEndpoints(Requests):
    def _p_markets_details(self) -> Plan[list[Market]]:
        rows = yield Call("api", "/exchange/v1/markets_details")
        markets = [Market.from_details(r) for r in rows]
        self._markets = markets
        return markets

    def _p_market(self, symbol: str) -> Plan[Market]:
        """Market metadata for a spot symbol (BTCUSDT) or a pair (B-BTC_USDT); cached."""
        markets = self._markets if self._markets is not None else (yield from self._p_markets_details())
        for m in markets:
            if m.symbol == symbol and m.status == "active":
                return m
        for m in markets:
            if symbol in (m.symbol, m.pair):
                return m
        raise ValidationError("symbol", f"is not listed on the exchange: {symbol!r}")

    def _p_pair(self, symbol_or_pair: str) -> Plan[str]:
        if _is_pair(symbol_or_pair):
            return symbol_or_pair
        return (yield from self._p_market(symbol_or_pair)).pair

    def _p_ticker(self) -> Plan[list[Ticker]]:
        """Last price, bid/ask and 24 h stats of every market."""
        rows = yield Call("api", "/exchange/ticker")
        return [Ticker.from_json(r) for r in rows]

    def _p_markets(self) -> Plan[list[str]]:
        """Every market symbol."""
        return list((yield Call("api", "/exchange/v1/markets")))

    def _p_candles_page(
        self,
        pair: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> Plan[list[dict[str, Any]]]:
        """One raw page of candles (as the exchange sends them: newest first, open time `time`)."""
        resolution_ms(interval)
        params: dict[str, Any] = {
            "pair": pair,
            "interval": interval,
            "limit": min(int(limit), MAX_CANDLES_PER_PAGE),
        }
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        return (yield Call("public", "/market_data/candles", params=params, exact=False))

    def _p_fetch_candles(
        self, symbol_or_pair: str, interval: str, start_ms: int, end_ms: int
    ) -> Plan[pl.DataFrame]:
        """Candles with start_ms <= open_time < end_ms, ascending, exact duplicates removed.

        Pages are windows of at most 1000 candles, so the result does not depend on whether the
        server fills a page from its start or its end. No cleaning beyond sort + dedupe: the
        market-data layer must see what the exchange sent.
        """
        step = resolution_ms(interval)
        if int(start_ms) >= int(end_ms):
            raise ValidationError("end_ms", f"must be after start_ms ({start_ms}), got {end_ms}")
        pair = yield from self._p_pair(symbol_or_pair)
        rows: list[dict[str, Any]] = []
        cursor = int(start_ms)
        span = (
            step * MAX_CANDLES_PER_PAGE
            if interval != "1M"
            else RESOLUTION_MS["1d"] * 28 * MAX_CANDLES_PER_PAGE
        )
        while cursor < end_ms:
            window_end = min(int(end_ms), cursor + span) - 1  # endTime is inclusive
            page = yield from self._p_candles_page(pair, interval, cursor, window_end, MAX_CANDLES_PER_PAGE)
            rows.extend(page)
            cursor = window_end + 1
        return exchange_window(rows, int(start_ms), int(end_ms))

    def _p_order_book(self, symbol_or_pair: str) -> Plan[OrderBook]:
        pair = yield from self._p_pair(symbol_or_pair)
        body = yield Call("public", "/market_data/orderbook", params={"pair": pair})
        return OrderBook.from_json(pair, body)

    def _p_public_trades(self, symbol_or_pair: str, limit: int = 30) -> Plan[list[PublicTrade]]:
        pair = yield from self._p_pair(symbol_or_pair)
        rows = yield Call(
            "public", "/market_data/trade_history", params={"pair": pair, "limit": min(int(limit), 500)}
        )
        return [PublicTrade.from_json(r) for r in rows]

    markets_details = endpoint(_p_markets_details)
    market = endpoint(_p_market)
    ticker = endpoint(_p_ticker)
    markets = endpoint(_p_markets)
    candles_page = endpoint(_p_candles_page)
    fetch_candles = endpoint(_p_fetch_candles)
    order_book = endpoint(_p_order_book)
    public_trades = endpoint(_p_public_trades)
