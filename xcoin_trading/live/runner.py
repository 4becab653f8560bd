"""Run one stored strategy on the latest closed candles and read its signal for the last candle.

Built-ins run in-process (our code); user source always runs in the sandbox.
"""

from __future__ import annotations

import polars as pl

from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.strategy.contract import (
    Signal,
    StrategyError,
    last_signal,
    normalize_candles,
    validate_signals,
)
from xcoin_trading.strategy.loader import compute_signals, load_strategy
from xcoin_trading.strategy.sandbox import SandboxLimits, run_sandboxed

__all__ = ["Signal", "last_signal", "run_strategy"]  # Signal and last_signal live with the contract


def run_strategy(
    strategy: StrategySettings,
    candles: pl.DataFrame,
    limits: SandboxLimits | None = None,
    *,
    deadline: float | None = None,
) -> pl.DataFrame:
    candles = normalize_candles(candles)
    if strategy.builtin:
        loaded = load_strategy(strategy.builtin)
        return compute_signals(loaded, candles, loaded.resolve_params(strategy.params))
    if not strategy.source:
        raise StrategyError(strategy.code, "has neither source nor a built-in")
    run = run_sandboxed(strategy.code, strategy.source, candles, strategy.params, limits, deadline=deadline)
    return validate_signals(run.signals, candles, strategy.code)
