"""SMA crossover (the SMA-SLTP reference workload): long when the fast SMA crosses above the
slow one, short (or exit, long_only) when it crosses below; SL/TP a fixed percentage of entry.

The SMAs use the spec's running sum (`s += c[i]; s -= c[i-n]`) so last-bit ties cross exactly as
in the reference; the whole signal is one numba pass (it is the workload sweeps run most).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

from xcoin_trading.errors import ValidationError
from xcoin_trading.strategy.builtin._common import (
    check_pct_exits,
    check_positive_int,
    frame_from_buffers,
    signal_buffers,
)
from xcoin_trading.strategy.contract import jit_for

DEFAULT_PARAMS = {"fast": 20, "slow": 50, "sl_pct": 0.02, "tp_pct": 0.04, "mode": "long_short"}


def check_params(params: dict) -> None:
    check_positive_int(params, "fast", "slow")
    if params["fast"] >= params["slow"]:
        raise ValidationError("params.fast", f"must be below slow ({params['slow']}), got {params['fast']}")
    check_pct_exits(params)


@njit(cache=True, nogil=True)
def _signals_nb(close, fast, slow, sl_pct, tp_pct, long_only, codes, stop, stop_valid, take, take_valid):
    """Fills the signal buffers (`_common.SignalBuffers`) in one pass over the closes."""
    n = close.shape[0]
    stop_valid[:] = 0
    take_valid[:] = 0
    short_code = 3 if long_only else 2
    sf = ss = 0.0
    was_above = was_below = False  # the previous candle's fast SMA vs slow SMA
    for i in range(n):
        c = close[i]
        sf += c
        ss += c
        if i >= fast:
            sf -= close[i - fast]
        if i >= slow:
            ss -= close[i - slow]
        # fast SMA vs slow SMA is the sign of sf*slow - ss*fast; only when that is within 1e-12
        # (far above the rounding of either side) do the two SMAs have to be computed as the
        # reference does (sf / fast, ss / slow) to tell which is above: two divisions saved per candle.
        gap = sf * slow - ss * fast
        tol = 1e-12 * sf * slow
        above, below = gap > tol, gap < -tol
        if not (above or below):
            above, below = sf / fast > ss / slow, sf / fast < ss / slow
        code = 0
        if i >= slow:  # both SMAs defined at i-1 and i
            if above and not was_above:
                code = 1
            elif below and not was_below:
                code = short_code
        was_above, was_below = above, below
        codes[i] = code
        stop[i] = take[i] = 0.0  # no level (null); zeros, never stale memory, under the nulls
        if code == 1 or code == 2:
            stop[i] = c * (1 - sl_pct) if code == 1 else c * (1 + sl_pct)
            take[i] = c * (1 + tp_pct) if code == 1 else c * (1 - tp_pct)
            stop_valid[i >> 3] |= np.uint8(1 << (i & 7))
            take_valid[i >> 3] |= np.uint8(1 << (i & 7))


def signals(candles: pl.DataFrame, params: dict) -> pl.DataFrame:
    out = signal_buffers(candles.height)
    jit_for(_signals_nb, candles.height)(
        candles.get_column("close").cast(pl.Float64).to_numpy(),
        int(params["fast"]),
        int(params["slow"]),
        float(params["sl_pct"]),
        float(params["tp_pct"]),
        params["mode"] == "long_only",
        *out,
    )
    return frame_from_buffers(out)
