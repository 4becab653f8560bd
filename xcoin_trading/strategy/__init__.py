"""The strategy contract, built-in strategies and the loader (see `contract.py`, `loader.py`)."""

from xcoin_trading.strategy.contract import (
    ACTION_DTYPE,
    ACTIONS,
    CANDLE_COLUMNS,
    SIGNAL_COLUMNS,
    Signal,
    StrategyError,
    normalize_candles,
    read_candles_file,
    validate_signals,
)
from xcoin_trading.strategy.loader import Strategy, compute_signals, load_source, load_strategy

__all__ = [
    "ACTIONS",
    "ACTION_DTYPE",
    "CANDLE_COLUMNS",
    "SIGNAL_COLUMNS",
    "Signal",
    "Strategy",
    "StrategyError",
    "compute_signals",
    "load_source",
    "load_strategy",
    "normalize_candles",
    "read_candles_file",
    "validate_signals",
]
