"""Market data: the Parquet candle lake, its quality checks, resampling, imports and the read API.

The rest of the platform reads candles only through `load_candles`.
"""

from xcoin_trading.candles import CANDLE_COLUMNS, CANDLE_SCHEMA
from xcoin_trading.marketdata.lake import load_candles

__all__ = ["CANDLE_COLUMNS", "CANDLE_SCHEMA", "load_candles"]
