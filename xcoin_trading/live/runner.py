"""Run one stored strategy on the latest closed candles and read its signal for the last candle.

Built-ins run in-process (our code); user source always runs in the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from xcoin_trading.exchange.markets import D
from xcoin_trading.live.registry import StrategySettings
from xcoin_trading.strategy.contract import StrategyError, normalize_candles, validate_signals
from xcoin_trading.strategy.loader import compute_signals, load_strategy
from xcoin_trading.strategy.sandbox import SandboxLimits, run_sandboxed


@dataclass(frozen=True)
class Signal:
    action: str  # LONG / SHORT / EXIT / HOLD
    price: Decimal  # the close of the signal candle: the reference entry price
    stop_loss: Decimal | None
    take_profit: Decimal | None
    candle_open_ms: int


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


def last_signal(signals: pl.DataFrame, candles: pl.DataFrame) -> Signal:
    row = signals.row(signals.height - 1, named=True)
    last = candles.row(candles.height - 1, named=True)

    def level(value: float | None) -> Decimal | None:
        return None if value is None else D(float(value))

    return Signal(str(row["action"]), D(float(last["close"])), level(row["stop_loss"]), level(row["take_profit"]),
                  int(last["open_time"]))  # fmt: skip
