"""Numba kernels: the candle walk (one position at a time) and the equity statistics.

Floats only here; `engine.py` validates inputs and shapes the outputs. Rules (see engine docs):
stops are checked from the candle after entry; a candle opening beyond a level fills at the open
(`gap_at_open`), else at the level; when one candle touches both levels the stop loss wins
unless `tp_first`, or the 1-minute candles inside decide; signals act at the close; the last
candle takes no new signal and closes what is open.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from xcoin_trading.risk import SIZE_OK, size_position_float

# Action codes (the physical codes of contract.ACTION_DTYPE).
HOLD, LONG, SHORT, EXIT = 0, 1, 2, 3
# Exit reasons.
REASON_SL, REASON_TP, REASON_SIGNAL, REASON_END = 0, 1, 2, 3
REASONS = ("SL", "TP", "SIGNAL", "END")
# Columns of the trade matrix the kernel returns.
(
    T_ENTRY_IDX,
    T_EXIT_IDX,
    T_SIDE,
    T_ENTRY_PRICE,
    T_EXIT_PRICE,
    T_QTY,
    T_ENTRY_FEE,
    T_EXIT_FEE,
    T_PNL,
    T_REASON,
    T_AMBIGUOUS,
    T_INTRABAR,
    T_STOP,
    T_TAKE,
) = range(14)
N_TRADE_FIELDS = 14
# Same-candle outcome codes.
_NONE, _SL, _TP, _BOTH = 0, 1, 2, 3


@njit(cache=True, nogil=True, inline="always")
def _touches(
    side: int, o: float, h: float, lo: float, sl: float, tp: float, gap_at_open: bool
) -> tuple[int, float]:
    """Which level one candle fills first, if it can tell: (_NONE/_SL/_TP/_BOTH, price)."""
    has_sl = not math.isnan(sl)
    has_tp = not math.isnan(tp)
    if side == 1:
        if gap_at_open and has_sl and o <= sl:
            return _SL, o
        if gap_at_open and has_tp and o >= tp:
            return _TP, o
        sl_hit = has_sl and lo <= sl
        tp_hit = has_tp and h >= tp
    else:
        if gap_at_open and has_sl and o >= sl:
            return _SL, o
        if gap_at_open and has_tp and o <= tp:
            return _TP, o
        sl_hit = has_sl and h >= sl
        tp_hit = has_tp and lo <= tp
    if sl_hit and tp_hit:
        return _BOTH, math.nan
    if sl_hit:
        return _SL, sl
    if tp_hit:
        return _TP, tp
    return _NONE, math.nan


@njit(cache=True, nogil=True)
def simulate_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    action: np.ndarray,  # int8 codes
    stop_loss: np.ndarray,  # NaN: none
    take_profit: np.ndarray,
    init_capital: float,
    risk_per_trade: float,
    leverage: float,
    fee_rate: float,
    step: float,
    quantity_decimals: int,
    min_quantity: float,
    min_notional: float,
    max_quantity: float,
    gap_at_open: bool,
    tp_first: bool,
    m1_open: np.ndarray,
    m1_high: np.ndarray,
    m1_low: np.ndarray,
    m1_bounds: np.ndarray,  # int64[n+1]: 1m rows of candle i are m1_bounds[i]:m1_bounds[i+1]; empty: off
):
    """Walk the candles. Returns (trades[k, N_TRADE_FIELDS], equity[n], side[n] int8, refused[4])."""
    n = close.shape[0]
    use_1m = m1_bounds.shape[0] == n + 1
    # Every trade starts on a LONG/SHORT row, so their count bounds the trade count. A fixed
    # buffer matters: growing an array inside the loop made the whole loop ~15x slower.
    entries = 0
    for i in range(n):
        if action[i] == LONG or action[i] == SHORT:  # noqa: SIM109 (numba)
            entries += 1
    trades = np.empty((max(entries, 1), N_TRADE_FIELDS))
    k = 0
    equity = np.empty(n)
    position = np.zeros(n, np.int8)
    refused = np.zeros(4, np.int64)
    realised = init_capital
    side = 0
    qty = entry = entry_fee = 0.0
    sl = tp = math.nan
    entry_i = -1

    for i in range(n + 1):
        # i == n is the end-of-data close of a still-open position at the last close.
        exit_price = math.nan
        reason = -1
        ambiguous = False
        intrabar = False
        if i == n:
            if side == 0:
                break
            exit_price, reason = close[n - 1], REASON_END
        elif side != 0 and entry_i < i:
            hit, price = _touches(side, open_[i], high[i], low[i], sl, tp, gap_at_open)
            if hit == _BOTH and use_1m:
                for j in range(m1_bounds[i], m1_bounds[i + 1]):
                    hit, price = _touches(side, m1_open[j], m1_high[j], m1_low[j], sl, tp, gap_at_open)
                    if hit != _NONE:
                        break
                intrabar = hit in (_SL, _TP)
                if not intrabar:
                    hit = _BOTH  # no 1m candles, or they cannot tell either: the rule decides
            if hit == _BOTH:
                ambiguous = True
                hit, price = (_TP, tp) if tp_first else (_SL, sl)
            if hit == _SL:
                exit_price, reason = price, REASON_SL
            elif hit == _TP:
                exit_price, reason = price, REASON_TP
        if reason < 0 and side != 0 and i < n - 1:
            a = action[i]
            if a == EXIT or (a == LONG and side == -1) or (a == SHORT and side == 1):
                exit_price, reason = close[i], REASON_SIGNAL

        if reason >= 0:
            exit_fee = fee_rate * qty * exit_price
            pnl = side * qty * (exit_price - entry) - entry_fee - exit_fee
            realised += pnl
            t = trades[k]
            t[T_ENTRY_IDX] = entry_i
            t[T_EXIT_IDX] = min(i, n - 1)
            t[T_SIDE] = side
            t[T_ENTRY_PRICE] = entry
            t[T_EXIT_PRICE] = exit_price
            t[T_QTY] = qty
            t[T_ENTRY_FEE] = entry_fee
            t[T_EXIT_FEE] = exit_fee
            t[T_PNL] = pnl
            t[T_REASON] = reason
            t[T_AMBIGUOUS] = ambiguous
            t[T_INTRABAR] = intrabar
            t[T_STOP] = sl
            t[T_TAKE] = tp
            k += 1
            side = 0  # flat again: the entry below may reopen on this same candle
            if i == n:
                equity[n - 1] = realised
                position[n - 1] = 0
                break

        if i < n - 1 and side == 0:
            a = action[i]
            if a in (LONG, SHORT):
                q, code = size_position_float(
                    realised,
                    risk_per_trade,
                    close[i],
                    stop_loss[i],
                    leverage,
                    fee_rate,
                    step,
                    quantity_decimals,
                    min_quantity,
                    min_notional,
                    max_quantity,
                )
                if code != SIZE_OK:
                    refused[code] += 1
                elif q > 0.0:
                    side = 1 if a == LONG else -1
                    qty = q
                    entry = close[i]
                    entry_fee = fee_rate * qty * entry
                    sl = stop_loss[i]
                    tp = take_profit[i]
                    entry_i = i

        if i < n:
            if side != 0:
                equity[i] = realised - entry_fee + side * qty * (close[i] - entry)
            else:
                equity[i] = realised
            position[i] = side
    return trades[:k].copy(), equity, position, refused


@njit(cache=True, nogil=True)
def equity_stats_nb(equity: np.ndarray, init_capital: float):
    """Per-candle returns' moments, drawdowns and their duration over the equity curve.

    Returns (drawdown[n], drawdown_pct[n], mean_r, std_r, downside_dev, max_dd, max_dd_pct,
    max_dd_duration_candles). Returns are simple per-candle returns, the first against the
    initial capital; drawdowns are measured from the running peak including the initial capital.
    Two passes for the variance (sum, then squared deviations): stable and vectorisable.
    """
    n = equity.shape[0]
    drawdown = np.empty(n)
    drawdown_pct = np.empty(n)
    returns = np.empty(n)
    prev = init_capital
    total = 0.0
    down2 = 0.0
    for i in range(n):
        e = equity[i]
        r = e / prev - 1.0 if prev > 0.0 else 0.0
        returns[i] = r
        total += r
        down2 += min(r, 0.0) * min(r, 0.0)
        prev = e
    mean_r = total / n if n > 0 else 0.0
    m2 = 0.0
    for i in range(n):
        d = returns[i] - mean_r
        m2 += d * d
    peak = init_capital
    max_dd = 0.0
    max_dd_pct = 0.0
    dur = 0
    max_dur = 0
    for i in range(n):
        e = equity[i]
        if e >= peak:
            peak = e
            dur = 0
        else:
            dur += 1
            max_dur = max(max_dur, dur)
        dd = peak - e
        ddp = dd / peak * 100.0 if peak > 0.0 else 0.0
        drawdown[i] = dd
        drawdown_pct[i] = ddp
        max_dd = max(max_dd, dd)
        max_dd_pct = max(max_dd_pct, ddp)
    var = m2 / (n - 1) if n > 1 else 0.0
    std_r = math.sqrt(var) if var > 0.0 else 0.0
    downside = math.sqrt(down2 / n) if n > 0 else 0.0
    return drawdown, drawdown_pct, mean_r, std_r, downside, max_dd, max_dd_pct, max_dur
