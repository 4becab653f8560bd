"""The numba kernel: the candle walk (one position at a time) with the equity statistics fused in.

Floats only here; `engine.py` validates inputs and shapes the outputs. Rules (see engine docs):
stops are checked from the candle after entry; a candle opening beyond a level fills at the open
(`gap_at_open`), else at the level; when one candle touches both levels the stop loss wins
unless `tp_first`, or the 1-minute candles inside decide; signals act at the close; the last
candle takes no new signal and closes what is open.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from xcoin_trading.risk import SIZE_OK, size_position_float
from xcoin_trading.store.lifecycle import BACKTEST_REASONS, REASON_END, REASON_SIGNAL, REASON_SL, REASON_TP
from xcoin_trading.strategy.builtin.sma_crossover import cross_levels
from xcoin_trading.strategy.contract import HOLD, LONG, SHORT

# A trade's exit reason code indexes REASONS, the labels a backtest's trades carry (`exit_reason`).
REASONS = tuple(r.backtest_label for r in BACKTEST_REASONS)
# Rows of the trade matrix the kernel fills (one column per trade: each field is contiguous).
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


@njit(cache=True, nogil=True, inline="always")
def slipped(
    price: float, direction: int, h: float, lo: float, frac: float, of_range: float, tick: float
) -> float:
    """A market fill moved against the taker: a buy (`direction` 1) pays more, a sell less, by
    `frac` of the price plus `of_range` of the candle's high-low range; on the tick when given
    (as the simulator rounds its slipped fills). No slippage: the price itself, bit for bit."""
    if frac == 0.0 and of_range == 0.0:
        return price
    out = price + direction * (price * frac + (h - lo) * of_range)
    if tick > 0.0:
        out = round(out / tick) * tick
    return out


@njit(cache=True, nogil=True, inline="always")
def market_fill(
    close: float, direction: int, h: float, lo: float, frac: float, of_range: float, tick: float
) -> float:
    """A market order at the close, slipped: from the close on the tick when there is one, as the
    simulator takes its current price (a stop's level or gap open is slipped as it is)."""
    if frac == 0.0 and of_range == 0.0:
        return close
    base = round(close / tick) * tick if tick > 0.0 else close
    return slipped(base, direction, h, lo, frac, of_range, tick)


@njit(cache=True, nogil=True)
def count_entries(action: np.ndarray) -> int:
    """LONG/SHORT rows: every trade starts on one, so this bounds the trade count. (A fixed trade
    buffer matters: growing one inside the walk made the whole loop ~15x slower.)"""
    entries = 0
    for i in range(action.shape[0]):
        entries += (action[i] == LONG) | (action[i] == SHORT)
    return entries


@intrinsic
def _prefetch_intrinsic(typingctx, array, index):
    """Ask the CPU to bring array[index]'s cache line in (LLVM's `prefetch`; no effect on results).
    The walk reads a trade's entry row (its prices and levels) right after jumping over flat
    candles, a place no hardware prefetcher predicts: each of those reads waited on memory."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]), "llvm.prefetch.p0"
        )
        # read (0), keep in all cache levels (3), data (1)
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), byte_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


_prefetch = cast("Callable[[np.ndarray, int], None]", _prefetch_intrinsic)  # as jitted code calls it


# Fields of the equity statistics the kernel returns with the walk (see `simulate_nb`).
S_MEAN_R, S_STD_R, S_DOWNSIDE, S_MAX_DD, S_MAX_DD_PCT, S_MAX_DD_CANDLES, S_EXPOSED_CANDLES = range(7)
N_STATS = 7


@njit(cache=True, nogil=True)
def simulate_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    action: np.ndarray,  # int codes (uint8 / int8)
    stop_loss: np.ndarray,  # read on LONG/SHORT rows only; NaN or null: none
    stop_valid: np.ndarray,  # Arrow validity bitmap of stop_loss (empty: no nulls)
    stop_offset: int,  # its first bit
    take_profit: np.ndarray,
    take_valid: np.ndarray,
    take_offset: int,
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
    slip_frac: float,  # market fills (entries, signal/END exits, stop losses) move by this fraction
    slip_range: float,  # ... plus this fraction of the candle's high - low
    slip_tick: float,  # slipped fills land on this tick (0: not rounded)
    m1_open: np.ndarray,
    m1_high: np.ndarray,
    m1_low: np.ndarray,
    m1_bounds: np.ndarray,  # int64[n+1]: 1m rows of candle i are m1_bounds[i]:m1_bounds[i+1]; empty: off
    equity: np.ndarray,  # out, float64[n] (or empty: not kept)
    drawdown: np.ndarray,  # out, float64[n] (or empty)
    drawdown_pct: np.ndarray,  # out, float64[n] (or empty)
    position: np.ndarray,  # out, int8[n] (or empty)
    trades: np.ndarray,  # out, float64[N_TRADE_FIELDS, capacity]: a column per trade
    sma=None,  # (fast, slow, sl_pct, tp_pct, short code): the SMA crossover's signals computed in the walk
    sma_sums=None,  # (fast sums, slow sums): with `sma`, its running sums precomputed (a sweep shares them)
):
    """Walk the candles. Returns (k, refused[4], stats[N_STATS], ok): the trades are trades[:, :k].

    With `sma` the signals are not read from `action`/levels but computed candle by candle in this
    pass (the same bits as `sma_crossover`'s signal pass; the action arrays may be empty): no
    signal pass over the closes, no signal arrays written and read back. Numba compiles that form
    separately (`sma is None` is pruned), so the array form pays nothing for it. `ok` is False when an entry row's levels break the signal contract (the caller
    then takes the frame path, which names the row); always True without `sma`. More trades than
    `trades` holds (only possible with `sma`, whose entry count is not known up front) are counted
    in k but not written: the caller runs again with room for k.

    The per-candle curves go to the `out` arrays when they have n rows; sweeps pass empty ones.
    The equity statistics (`S_*`) are accumulated in the same pass: per-candle simple returns of
    the mark-to-market equity (the first against the initial capital), their mean, standard
    deviation (ddof=1) and downside deviation; drawdowns from the running peak including the
    initial capital, the longest run of candles below a peak, and the candles holding a position.
    """
    n = close.shape[0]
    use_1m = m1_bounds.shape[0] == n + 1
    keep = equity.shape[0] == n
    k = 0
    refused = np.zeros(4, np.int64)
    realised = init_capital
    side = 0
    qty = entry = entry_fee = 0.0
    sl = tp = math.nan
    entry_i = -1
    next_entry = -1
    # Equity statistics. The variance uses sums of returns shifted by the first return (a
    # one-pass form that stays exact for constant returns and is stable for returns near it).
    prev_e = init_capital
    shift = math.nan
    sum_d = sum_d2 = down2 = 0.0
    peak = trough = init_capital  # > 0 (validated), and it only grows
    dd = ddp = max_dd = max_dd_pct = 0.0
    dur = max_dur = 0
    exposed = 0
    # The fused signal state (see `sma`): running sums, the previous candle's side, this candle's
    # code and whether every entry row's levels keep the contract.
    sf = ss = 0.0
    was_above = was_below = False
    code = 0
    ok = True
    e = init_capital
    capacity = trades.shape[1]

    i = 0
    while i < n:
        if sma is not None:
            # Candle i of `sma_crossover._kernel_signals_nb`, the same operations in the same order
            # (written out here: called as a jitted helper, the step ran ~7x slower).
            fast, slow = sma[0], sma[1]
            c = close[i]
            if sma_sums is not None:
                sf, ss = sma_sums[0][i], sma_sums[1][i]
            else:
                sf += c
                ss += c
                if i >= fast:
                    sf -= close[i - fast]
                if i >= slow:
                    ss -= close[i - slow]
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
                    code = sma[4]
            was_above, was_below = above, below
            if code == 1 or code == 2:
                ok = ok and cross_levels(c, code, sma[2], sma[3])[2]
            elif side == 0 and 0 < i < n - 1:
                # Flat and no entry: only the statistics' running sums and the drawdown duration
                # move (a return of exactly 0), as in the array form's jump over flat candles.
                d = 0.0 - shift
                sum_d += d
                sum_d2 += d * d
                dur = (dur + 1) * (e < peak)
                max_dur = max(max_dur, dur)
                if keep:
                    equity[i] = e
                    drawdown[i] = dd
                    drawdown_pct[i] = ddp
                    position[i] = 0
                i += 1
                continue
        exit_price = math.nan
        reason = -1
        ambiguous = False
        intrabar = False
        # Every candle's prices are read, flat or not: a sequential stream the prefetcher keeps up
        # with, where loads skipped while flat left each position's first candles waiting on memory.
        o, h, lo, cl = open_[i], high[i], low[i], close[i]
        # Quick test first: most candles reach neither level (flat: the levels are NaN, which never
        # compares).
        if side == 1:
            near = (lo <= sl) | (o <= sl) | (h >= tp) | (o >= tp)
        else:
            near = (h >= sl) | (o >= sl) | (lo <= tp) | (o <= tp)
        if side != 0:
            if near and entry_i < i:
                hit, price = _touches(side, o, h, lo, sl, tp, gap_at_open)
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
                if hit == _SL:  # a stop market order: slipped; a take profit fills at its level
                    exit_price, reason = (
                        slipped(price, -side, h, lo, slip_frac, slip_range, slip_tick),
                        REASON_SL,
                    )
                elif hit == _TP:
                    exit_price, reason = price, REASON_TP
            if reason < 0:
                a = code if sma is not None else action[i]
                if i == n - 1:
                    reason = REASON_END  # what is still open closes at the last close
                elif a != HOLD and a != (LONG if side == 1 else SHORT):  # EXIT, or the opposite side
                    reason = REASON_SIGNAL
                if reason >= 0:
                    exit_price = market_fill(cl, -side, h, lo, slip_frac, slip_range, slip_tick)

        if reason >= 0:
            exit_fee = fee_rate * qty * exit_price
            pnl = side * qty * (exit_price - entry) - entry_fee - exit_fee
            realised += pnl
            if k < capacity:
                trades[T_ENTRY_IDX, k] = entry_i
                trades[T_EXIT_IDX, k] = i
                trades[T_SIDE, k] = side
                trades[T_ENTRY_PRICE, k] = entry
                trades[T_EXIT_PRICE, k] = exit_price
                trades[T_QTY, k] = qty
                trades[T_ENTRY_FEE, k] = entry_fee
                trades[T_EXIT_FEE, k] = exit_fee
                trades[T_PNL, k] = pnl
                trades[T_REASON, k] = reason
                trades[T_AMBIGUOUS, k] = ambiguous
                trades[T_INTRABAR, k] = intrabar
                trades[T_STOP, k] = sl
                trades[T_TAKE, k] = tp
            k += 1
            # Flat again (the entry below may reopen on this same candle): nothing held, no levels.
            side = 0
            qty = entry_fee = 0.0
            sl = tp = math.nan

        if side == 0 and i < n - 1:
            a = code if sma is not None else action[i]
            if a == LONG or a == SHORT:  # noqa: SIM109 (numba)
                if sma is not None:
                    stop, take, _ = cross_levels(cl, a, sma[2], sma[3])
                else:
                    bit = i + stop_offset
                    stop = (
                        stop_loss[i]
                        if stop_valid.shape[0] == 0 or (stop_valid[bit >> 3] >> (bit & 7)) & 1
                        else math.nan
                    )
                    bit = i + take_offset
                    take = (
                        take_profit[i]
                        if take_valid.shape[0] == 0 or (take_valid[bit >> 3] >> (bit & 7)) & 1
                        else math.nan
                    )
                direction = 1 if a == LONG else -1
                fill = market_fill(cl, direction, h, lo, slip_frac, slip_range, slip_tick)
                q, code = size_position_float(
                    realised,
                    risk_per_trade,
                    fill,
                    stop,
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
                    side = direction
                    qty = q
                    entry = fill
                    entry_fee = fee_rate * qty * entry
                    sl = stop
                    tp = take
                    entry_i = i
                    if sma is None:
                        # The next entry signal: its row is fetched from memory while this position
                        # runs, and the walk jumps there once flat again (see below).
                        next_entry = i + 1
                        while (
                            next_entry < n - 1 and action[next_entry] != LONG and action[next_entry] != SHORT
                        ):  # noqa: SIM109 (numba)
                            next_entry += 1
                        _prefetch(open_, next_entry)
                        _prefetch(high, next_entry)
                        _prefetch(low, next_entry)
                        _prefetch(close, next_entry)
                        _prefetch(stop_loss, next_entry)
                        _prefetch(take_profit, next_entry)

        e = realised - entry_fee + side * qty * (cl - entry)  # flat: qty and entry_fee are 0
        # Branch-free where the data decides (new peak or not, under water or not): those branches
        # mispredicted often enough to cost ~15% of the walk. A close that did not move gives
        # r = e / e - 1 = 0 exactly, as the old skip did.
        r = e / prev_e - 1.0 if prev_e > 0.0 else 0.0
        prev_e = e
        # The deepest point below a peak is that peak's drawdown: `closed` only grows while the
        # peak stands (trough only falls), so folding it in on every candle keeps the same maximum;
        # the percentage (a division) is folded in only when a new peak ends that drawdown (and
        # after the loop). Same bits: (peak - trough) / peak is monotone in trough.
        closed = peak - trough
        max_dd = max(max_dd, closed)
        new_peak = e > peak
        if new_peak:
            max_dd_pct = max(max_dd_pct, closed / peak * 100.0)
        trough = e if new_peak else min(trough, e)
        peak = e if new_peak else peak
        if keep:
            dd = peak - e
            ddp = dd / peak * 100.0
        if i == 0:
            shift = r
        d = r - shift
        sum_d += d
        sum_d2 += d * d
        down2 += min(r, 0.0) * min(r, 0.0)
        dur = (dur + 1) * (e < peak)
        max_dur = max(max_dur, dur)
        exposed += side != 0
        if keep:
            equity[i] = e
            drawdown[i] = dd
            drawdown_pct[i] = ddp
            position[i] = side
        i += 1
        if sma is None and side == 0 and i < n - 1:
            # Flat until the next entry signal: those candles change nothing but the statistics'
            # running sums (a return of 0 each) and the drawdown duration, so they are accounted
            # for here in a tight loop instead of a full candle each (half the candles, typically).
            # No entry signal between the last entry and `next_entry`: when flat again before it,
            # it is where this jump lands (the rows behind it already on their way from memory).
            j = next_entry if next_entry >= i else i
            while j < n - 1 and action[j] != LONG and action[j] != SHORT:  # noqa: SIM109 (numba)
                j += 1
            if j > i:
                d = 0.0 - shift
                if d != 0.0:
                    for _ in range(j - i):
                        sum_d += d
                        sum_d2 += d * d
                else:  # adding 0.0 again and again changes nothing after the first time
                    sum_d += d
                    sum_d2 += d * d
                if e < peak:
                    dur += j - i
                    max_dur = max(max_dur, dur)
                if keep:
                    equity[i:j] = e
                    drawdown[i:j] = dd
                    drawdown_pct[i:j] = ddp
                    position[i:j] = 0
                i = j

    max_dd = max(max_dd, peak - trough)
    max_dd_pct = max(max_dd_pct, (peak - trough) / peak * 100.0)
    stats = np.zeros(N_STATS)
    if n > 0:
        stats[S_MEAN_R] = shift + sum_d / n
        stats[S_DOWNSIDE] = math.sqrt(down2 / n)
    if n > 1:
        var = (sum_d2 - sum_d * sum_d / n) / (n - 1)
        stats[S_STD_R] = math.sqrt(var) if var > 0.0 else 0.0
    stats[S_MAX_DD] = max_dd
    stats[S_MAX_DD_PCT] = max_dd_pct
    stats[S_MAX_DD_CANDLES] = max_dur
    stats[S_EXPOSED_CANDLES] = exposed
    return k, refused, stats, ok


@njit(cache=True, nogil=True)
def curves_nb(
    close: np.ndarray,
    trades: np.ndarray,
    init_capital: float,
    equity: np.ndarray,
    drawdown: np.ndarray,
    drawdown_pct: np.ndarray,
    position: np.ndarray,
) -> None:
    """The per-candle curves `simulate_nb` writes when kept, replayed from its trades with the same
    operations in the same order (the same bits): a backtest builds them only when they are read."""
    n = close.shape[0]
    count = trades.shape[1]
    realised = init_capital
    side = 0
    qty = entry = entry_fee = 0.0
    peak = init_capital
    t = 0
    for i in range(n):
        if side != 0 and trades[T_EXIT_IDX, t] == i:
            realised += trades[T_PNL, t]
            side = 0
            qty = entry_fee = 0.0  # `entry` stays, as in the walk (it is multiplied by 0 while flat)
            t += 1
        if side == 0 and t < count and trades[T_ENTRY_IDX, t] == i:
            side = int(trades[T_SIDE, t])
            qty = trades[T_QTY, t]
            entry = trades[T_ENTRY_PRICE, t]
            entry_fee = trades[T_ENTRY_FEE, t]
        e = realised - entry_fee + side * qty * (close[i] - entry)
        peak = e if e > peak else peak
        dd = peak - e
        equity[i] = e
        drawdown[i] = dd
        drawdown_pct[i] = dd / peak * 100.0
        position[i] = side
