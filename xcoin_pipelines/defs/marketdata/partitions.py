"""Candle partitions: UTC day × symbol. Symbols are dynamic so a new strategy's market can be added
at runtime (`add_symbols`), without a code deploy."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

# First day of the shared real data (Binance spot from 2017-08-17); earlier days would be empty.
FIRST_DAY = "2017-08-17"

DAYS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)  # + today (partial)
SYMBOLS = dg.DynamicPartitionsDefinition(name="market_symbols")
CANDLE_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAYS, "symbol": SYMBOLS})


def add_symbols(instance: dg.DagsterInstance, symbols: Iterable[str]) -> list[str]:
    """Register markets whose candles the platform keeps; returns the ones that were new.

    Called by the live/strategy layer when a strategy on a new market is created. Each symbol is
    validated first, so a typo never becomes a partition.
    """
    from xcoin_trading.marketdata.candles import check_symbol  # polars: not at code location load

    wanted = sorted({check_symbol(s) for s in symbols})
    known = set(instance.get_dynamic_partitions(SYMBOLS.name))
    new = [s for s in wanted if s not in known]
    if new:
        instance.add_dynamic_partitions(SYMBOLS.name, new)
    return new


def registered_symbols(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(SYMBOLS.name))


def candle_partition_key(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})
