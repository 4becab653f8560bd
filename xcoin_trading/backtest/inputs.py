"""What a backtest runs on: candles checked once per frame object (`normalized`), and signals in the
kernel's form — a built-in's own buffers when it has them, else the validated signal frame's
zero-copy buffers (`signal_arrays`), levels rounded to the tick for live parity (`on_tick`)."""

from __future__ import annotations

import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np
import polars as pl

from xcoin_trading.exchange.markets import Market
from xcoin_trading.money import to_decimal
from xcoin_trading.strategy import Strategy, compute_signals, normalize_candles
from xcoin_trading.strategy.builtin._common import IndicatorMemo, KernelSignals, SmaRule
from xcoin_trading.strategy.contract import ACTION_DTYPE, float_buffers


class _LevelRule(Protocol):
    """What the signal path reads of a `SimulationConfig` (the engine imports this module)."""

    @property
    def levels_on_tick(self) -> bool: ...


def signal_arrays(signals: pl.DataFrame) -> tuple[np.ndarray, tuple, tuple]:
    """Validated signals → (uint8 action codes, stop buffers, take buffers), all zero-copy.

    Level buffers are (values, validity bitmap, bit offset) as `float_buffers` gives them.
    """
    # The Enum's physical codes are the kernel's action codes: no cast, no copy.
    codes = signals.get_column("action").cast(ACTION_DTYPE).to_physical().rechunk().to_numpy()
    stop, take = (
        float_buffers(signals.get_column(c).cast(pl.Float64).rechunk()) for c in ("stop_loss", "take_profit")
    )
    return codes, stop, take


def on_tick(levels: tuple, market: Market) -> tuple:
    """Level buffers rounded to the tick exactly as the fan-out rounds them (Decimal, half-even);
    no level becomes NaN."""
    values, bits, offset = levels
    present = np.ones(values.shape[0], bool) if bits.shape[0] == 0 else np.unpackbits(bits, bitorder="little")[
        offset : offset + values.shape[0]].astype(bool)  # fmt: skip
    out = np.full(values.shape[0], np.nan)
    for i in np.flatnonzero(present & ~np.isnan(values)):
        out[i] = float(market.round_price(to_decimal(float(values[i]))))
    return out, np.empty(0, np.uint8), 0


_NORMALIZED: OrderedDict[int, tuple[weakref.ref, pl.DataFrame | None]] = OrderedDict()
_NORMALIZED_KEPT = 8
# Re-entrant: evicting an entry may free a frame whose weakref callback forgets its own entry.
_NORMALIZED_LOCK = threading.RLock()


def normalized(candles: pl.DataFrame) -> pl.DataFrame:
    """`normalize_candles`, once per frame object: a sweep, its out-of-sample part and every
    walk-forward step pass the same frame again, and repeated backtests of one loaded frame need
    not re-check 1M candles (~5 ms). Frames are taken as immutable (polars frames are, short of
    an explicit in-place `frame[row, col] = value`, which the backtest APIs never do)."""
    if isinstance(candles, pl.DataFrame):
        with _NORMALIZED_LOCK:
            hit = _NORMALIZED.get(id(candles))
        if hit is not None and hit[0]() is candles:
            return candles if hit[1] is None else hit[1]
    out = normalize_candles(candles)
    _remember(candles, out if out is not candles else None)
    if out is not candles:
        _remember(out, None)  # the output is normalised too: passing it back checks nothing again
    return out


def _remember(frame: pl.DataFrame, result: pl.DataFrame | None) -> None:
    key = id(frame)

    def forget(_: weakref.ref) -> None:
        with _NORMALIZED_LOCK:
            _NORMALIZED.pop(key, None)

    with _NORMALIZED_LOCK:
        _NORMALIZED[key] = (weakref.ref(frame, forget), result)
        while len(_NORMALIZED) > _NORMALIZED_KEPT:
            _NORMALIZED.popitem(last=False)


def kernel_signals(
    strategy: Strategy,
    candles: pl.DataFrame,
    params: dict[str, Any],
    config: _LevelRule,
    memo: IndicatorMemo | None = None,
) -> KernelSignals | pl.DataFrame:
    """The signals a backtest feeds the kernel: a built-in's own kernel-form signals when it has
    them (no frame, no re-validation of what it guarantees; `memo` shares indicators between the
    combinations of a sweep on these candles), else `compute_signals`' validated frame."""
    fast = _builtin_attr(strategy, "kernel_signals")
    if fast is not None and not config.levels_on_tick:
        out = fast(candles, params, memo)
        if out is not None:
            return out
    return compute_signals(strategy, candles, params)  # also what names a contract breach


def kernel_rule(strategy: Strategy, params: dict[str, Any], config: _LevelRule) -> SmaRule | None:
    """A built-in's signals as a rule the kernel computes inside its walk (no signal pass), when it
    has one: a single backtest's fast path. The kernel raises `LevelsOutsideContract` for levels
    the contract refuses; the caller then takes `kernel_signals`, whose frame path names the row."""
    if config.levels_on_tick:
        return None
    rule = _builtin_attr(strategy, "kernel_rule")
    return None if rule is None else rule(params)


def rule_sums(
    strategy: Strategy, candles: pl.DataFrame, params: dict[str, Any], memo: IndicatorMemo
) -> tuple[np.ndarray, np.ndarray] | None:
    """The running sums `kernel_rule`'s rule would accumulate in its walk, from `memo` (computed
    once per length for all of a sweep's combinations on these candles): same bits, one dependent
    add chain fewer per candle. None for a strategy without them."""
    sums = _builtin_attr(strategy, "kernel_sums")
    return None if sums is None else sums(candles, params, memo)


def _builtin_attr(strategy: Strategy, name: str):
    if strategy.kind != "builtin":
        return None
    module = sys.modules.get(getattr(strategy.signals_fn, "__module__", ""))
    if module is None or not module.__name__.startswith("xcoin_trading.strategy.builtin."):
        return None
    if getattr(module, "signals", None) is not strategy.signals_fn:
        return None  # a Strategy built around some other function under a built-in's name
    return getattr(module, name, None)


def slice_signals(signals: pl.DataFrame | KernelSignals, start: int) -> pl.DataFrame | KernelSignals:
    """Signals from row `start` on, zero-copy (the trade buffer size stays an upper bound)."""
    if not isinstance(signals, KernelSignals):
        return signals.slice(start)

    def levels(buffers: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, int]:
        values, bits, offset = buffers
        return values[start:], bits, offset + start if bits.shape[0] else 0

    return KernelSignals(signals.codes[start:], levels(signals.stop), levels(signals.take), signals.entries)
