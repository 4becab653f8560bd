"""SMA crossover (the SMA-SLTP reference workload): long when the fast SMA crosses above the
slow one, short (or exit, long_only) when it crosses below; SL/TP a fixed percentage of entry.

The SMAs use the spec's running sum (`s += c[i]; s -= c[i-n]`) so last-bit ties cross exactly as
in the reference; the whole signal is one numba pass (it is the workload sweeps run most).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from numba import njit

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import (
    IndicatorMemo,
    KernelSignals,
    SmaRule,
    check_pct_exits,
    check_positive_int,
    frame_from_buffers,
    signal_buffers,
)
from xcoin_trading.strategy.contract import jit_for, pooled_empty

DEFAULT_PARAMS = {"fast": 20, "slow": 50, "sl_pct": 0.02, "tp_pct": 0.04, "mode": "long_short"}


def check_params(params: dict) -> None:
    check_positive_int(params, "fast", "slow")
    if params["fast"] >= params["slow"]:
        raise ValidationError("params.fast", f"must be below slow ({params['slow']}), got {params['fast']}")
    check_pct_exits(params)


@njit(cache=True, nogil=True)
def _running_sum_nb(close, n, out):
    """The running sum of the last `n` closes exactly as `_kernel_signals_nb` accumulates it."""
    s = 0.0
    for i in range(close.shape[0]):
        s += close[i]
        if i >= n:
            s -= close[i - n]
        out[i] = s


@njit(cache=True, nogil=True)
def cross_levels(c, code, sl_pct, tp_pct):
    """An entry row's (stop, take, within the contract) exactly as `_kernel_signals_nb` sets them,
    for the backtest kernel's walk that computes these signals itself (`kernel.simulate_nb`'s
    `sma`, whose candle step mirrors `_kernel_signals_nb`'s: that one must call no jitted function)."""
    sl = c * (1 - sl_pct) if code == 1 else c * (1 + sl_pct)
    tp = c * (1 + tp_pct) if code == 1 else c * (1 - tp_pct)
    fine = sl > 0.0 and tp > 0.0 and sl < math.inf and tp < math.inf
    fine = fine and ((sl < c < tp) if code == 1 else (tp < c < sl))
    return sl, tp, fine


def kernel_rule(params: dict) -> SmaRule:
    """These signals as the rule the backtest kernel computes inside its walk (`simulate_nb`)."""
    short_code = 3 if params["mode"] == "long_only" else 2
    return SmaRule(int(params["fast"]), int(params["slow"]), float(params["sl_pct"]), float(params["tp_pct"]),
                   short_code)  # fmt: skip


@njit(cache=True, nogil=True)
def _kernel_signals_nb(close, fast_sums, slow_sums, fast, slow, sl_pct, tp_pct, long_only, codes, stop, take):
    """The signals in the kernel's form (`_common.KernelSignals`): codes on every row,
    levels on entry rows only, no bitmaps. The running sums are read from `fast_sums`/`slow_sums`
    when given (a sweep computes each length once), else accumulated here, the same bits either way.

    Returns (entry rows, ok): not ok when a level breaks the signal contract (`validate_signals`'
    checks on entry rows); the caller then takes the frame path, which names the row.
    Self-contained (no other jitted function called), so its plain-Python original (`jit_for`, a
    live candle's few hundred rows) never loads numba."""
    n = close.shape[0]
    given = fast_sums.shape[0] == n
    short_code = 3 if long_only else 2
    sf = ss = 0.0
    was_above = was_below = False
    entries = 0
    ok = True
    for i in range(n):
        c = close[i]
        if given:
            sf, ss = fast_sums[i], slow_sums[i]
        else:
            sf += c
            ss += c
            if i >= fast:
                sf -= close[i - fast]
            if i >= slow:
                ss -= close[i - slow]
        # fast SMA vs slow SMA is the sign of sf*slow - ss*fast; only when that is within 1e-12 (far
        # above the rounding of either side) do the two SMAs have to be computed as the reference
        # does (sf / fast, ss / slow) to tell which is above: two divisions saved per candle.
        gap = sf * slow - ss * fast
        tol = 1e-12 * sf * slow
        above, below = gap > tol, gap < -tol
        if not (above or below):
            above, below = sf / fast > ss / slow, sf / fast < ss / slow
        code = 0
        if i >= slow:
            if above and not was_above:
                code = 1
            elif below and not was_below:
                code = short_code
        was_above, was_below = above, below
        codes[i] = code
        if code == 1 or code == 2:
            sl = c * (1 - sl_pct) if code == 1 else c * (1 + sl_pct)
            tp = c * (1 + tp_pct) if code == 1 else c * (1 - tp_pct)
            stop[i] = sl
            take[i] = tp
            entries += 1
            # finite, > 0, on the right side of the close (NaN fails every comparison)
            fine = sl > 0.0 and tp > 0.0 and sl < math.inf and tp < math.inf
            fine = fine and ((sl < c < tp) if code == 1 else (tp < c < sl))
            ok = ok and fine
    return entries, ok


@njit(cache=True, nogil=True)
def _bitmaps_nb(codes, stop, stop_valid, take, take_valid):
    """Completes `_kernel_signals_nb`'s output into the frame's buffers (`_common.SignalBuffers`):
    validity bitmaps of the entry rows, zeros (never stale memory) under the nulls of the others."""
    stop_valid[:] = 0
    take_valid[:] = 0
    for i in range(codes.shape[0]):
        if codes[i] == 1 or codes[i] == 2:
            stop_valid[i >> 3] |= np.uint8(1 << (i & 7))
            take_valid[i >> 3] |= np.uint8(1 << (i & 7))
        else:
            stop[i] = take[i] = 0.0


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    n = candles.height
    out = signal_buffers(n)
    close = candles.get_column("close").cast(pl.Float64).to_numpy()
    jit_for(_kernel_signals_nb, n)(
        close, close[:0], close[:0], int(params["fast"]), int(params["slow"]), float(params["sl_pct"]),
        float(params["tp_pct"]), params["mode"] == "long_only", out.codes, out.stop, out.take,
    )  # fmt: skip
    jit_for(_bitmaps_nb, n)(*out)
    return frame_from_buffers(out)


def kernel_signals(
    candles: pl.DataFrame, params: dict, memo: IndicatorMemo | None = None
) -> KernelSignals | None:
    """`signals` in the backtest kernel's form without building or re-validating a frame (sweeps
    run this per combination); None when a level breaks the contract (the frame path says where)."""
    close = candles.get_column("close").to_numpy()
    n = close.shape[0]
    fast, slow = int(params["fast"]), int(params["slow"])
    if memo is None:  # a single backtest: the sums are accumulated in the pass
        fast_sums = slow_sums = np.empty(0)
        codes, stop, take = pooled_empty(n, np.uint8), pooled_empty(n), pooled_empty(n)
    else:
        fast_sums, slow_sums = kernel_sums(candles, params, memo)
        codes, stop, take = memo.scratch(n)
    entries, ok = jit_for(_kernel_signals_nb, n)(
        close, fast_sums, slow_sums, fast, slow, float(params["sl_pct"]), float(params["tp_pct"]),
        params["mode"] == "long_only", codes, stop, take,
    )  # fmt: skip
    if not ok:
        return None
    no_bits = np.empty(0, np.uint8)
    return KernelSignals(codes, (stop, no_bits, 0), (take, no_bits, 0), int(entries))


def kernel_sums(candles: pl.DataFrame, params: dict, memo: IndicatorMemo) -> tuple[np.ndarray, np.ndarray]:
    """The fast and slow running sums `kernel_rule`'s walk accumulates, shared through `memo`."""
    close = candles.get_column("close").to_numpy()
    n = close.shape[0]
    fast, slow = int(params["fast"]), int(params["slow"])
    return (
        memo.get(("sma_sum", fast), n * 8, lambda: _sums(close, fast)),
        memo.get(("sma_sum", slow), n * 8, lambda: _sums(close, slow)),
    )


def _sums(close: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(close.shape[0])
    jit_for(_running_sum_nb, close.shape[0])(close, n, out)
    return out
