"""Portfolio backtests: several sleeves (a strategy on a market) trading one shared capital.

One strategy over several markets is a sleeve per market; several strategies side by side on one
market is a sleeve per strategy on the same candles. Each sleeve follows exactly the single
backtest's rules (`engine.py`: entries at the close, stops from the next candle, gap fills, the
same-candle rule, slippage, fees, one position at a time per sleeve, END at the sleeve's last
candle). What sharing adds (*chosen*):
- Time: the union of the sleeves' candle times; a sleeve without a candle at a time does nothing
  then (its position is valued at its last close).
- Order within a time: every sleeve's exits first, then entries in sleeve order, so capital freed
  at a candle can be used by an entry on that same candle.
- Sizing: an entry is sized as a single backtest sizes it, on the capital not held by the other
  sleeves' open positions (realised equity minus their margin and entry fees). With one sleeve
  that is the realised equity: a one-sleeve portfolio is the single backtest, trade for trade.
- `intrabar="1m"` is not offered here (one intrabar series per sleeve would be needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from numba import njit

from xcoin_trading.backtest import kernel as k
from xcoin_trading.backtest.engine import SimulationConfig, infer_candle_ms, signal_arrays, trades_frame
from xcoin_trading.backtest.kernel import _BOTH, _SL, _TP, _touches, market_fill, slipped
from xcoin_trading.backtest.metrics import compute_metrics, curve_stats
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.risk import SIZE_OK, market_rounding_args, size_position_float
from xcoin_trading.store.lifecycle import REASON_END, REASON_SIGNAL, REASON_SL, REASON_TP
from xcoin_trading.strategy import Strategy, compute_signals, normalize_candles
from xcoin_trading.strategy.contract import EXIT, HOLD, LONG, SHORT

T_SLEEVE = k.N_TRADE_FIELDS  # the extra row of the portfolio trade matrix
MAX_SLEEVES = 64


@njit(cache=True, nogil=True)
def simulate_portfolio_nb(
    open_, high, low, close,  # float64[M, n]; NaN: the sleeve has no candle at that time
    action,  # uint8[M, n]
    stop, take,  # float64[M, n]; NaN: no level
    last,  # int64[M]: each sleeve's last candle (END there, no entry)
    init_capital, risk_per_trade, leverage, fee_rate,
    steps, decimals, min_qty, min_notional, max_qty,  # per sleeve
    gap_at_open, tp_first, slip_frac, slip_range, ticks,
    equity,  # out float64[n]
    position,  # out int8[M, n]
    trades,  # out float64[N_TRADE_FIELDS + 1, entries]
):  # fmt: skip
    """The single kernel's rules per sleeve over one shared capital. Returns (k, refused[4])."""
    m_count, n = close.shape
    side = np.zeros(m_count, np.int64)
    qty = np.zeros(m_count)
    entry = np.zeros(m_count)
    entry_fee = np.zeros(m_count)
    sl = np.full(m_count, math.nan)
    tp = np.full(m_count, math.nan)
    entry_i = np.full(m_count, -1, np.int64)
    mark = np.zeros(m_count)
    refused = np.zeros(4, np.int64)
    realised = init_capital
    kk = 0
    for i in range(n):
        for m in range(m_count):  # exits first, every sleeve
            cl = close[m, i]
            if math.isnan(cl) or side[m] == 0:
                continue
            o, h, lo = open_[m, i], high[m, i], low[m, i]
            s = side[m]
            reason = -1
            exit_price = math.nan
            ambiguous = False
            if entry_i[m] < i:
                hit, price = _touches(s, o, h, lo, sl[m], tp[m], gap_at_open)
                if hit == _BOTH:
                    ambiguous = True
                    hit, price = (_TP, tp[m]) if tp_first else (_SL, sl[m])
                if hit == _SL:
                    exit_price, reason = slipped(price, -s, h, lo, slip_frac, slip_range, ticks[m]), REASON_SL
                elif hit == _TP:
                    exit_price, reason = price, REASON_TP
            if reason < 0:
                a = action[m, i]
                if i == last[m]:
                    reason = REASON_END
                elif a != HOLD and a != (LONG if s == 1 else SHORT):
                    reason = REASON_SIGNAL
                if reason >= 0:
                    exit_price = market_fill(cl, -s, h, lo, slip_frac, slip_range, ticks[m])
            if reason >= 0:
                exit_fee = fee_rate * qty[m] * exit_price
                pnl = s * qty[m] * (exit_price - entry[m]) - entry_fee[m] - exit_fee
                realised += pnl
                trades[k.T_ENTRY_IDX, kk] = entry_i[m]
                trades[k.T_EXIT_IDX, kk] = i
                trades[k.T_SIDE, kk] = s
                trades[k.T_ENTRY_PRICE, kk] = entry[m]
                trades[k.T_EXIT_PRICE, kk] = exit_price
                trades[k.T_QTY, kk] = qty[m]
                trades[k.T_ENTRY_FEE, kk] = entry_fee[m]
                trades[k.T_EXIT_FEE, kk] = exit_fee
                trades[k.T_PNL, kk] = pnl
                trades[k.T_REASON, kk] = reason
                trades[k.T_AMBIGUOUS, kk] = ambiguous
                trades[k.T_INTRABAR, kk] = False
                trades[k.T_STOP, kk] = sl[m]
                trades[k.T_TAKE, kk] = tp[m]
                trades[T_SLEEVE, kk] = m
                kk += 1
                side[m] = 0
                qty[m] = entry_fee[m] = 0.0
                sl[m] = tp[m] = math.nan
        for m in range(m_count):  # then entries, in sleeve order
            cl = close[m, i]
            if math.isnan(cl) or side[m] != 0 or i >= last[m]:
                continue
            a = action[m, i]
            if a == LONG or a == SHORT:  # noqa: SIM109 (numba)
                held = 0.0
                for j in range(m_count):
                    if side[j] != 0:
                        held += qty[j] * entry[j] / leverage + entry_fee[j]
                direction = 1 if a == LONG else -1
                fill = market_fill(cl, direction, high[m, i], low[m, i], slip_frac, slip_range, ticks[m])
                q, code = size_position_float(
                    realised - held, risk_per_trade, fill, stop[m, i], leverage, fee_rate,
                    steps[m], decimals[m], min_qty[m], min_notional[m], max_qty[m],
                )  # fmt: skip
                if code != SIZE_OK:
                    refused[code] += 1
                elif q > 0.0:
                    side[m] = direction
                    qty[m] = q
                    entry[m] = fill
                    entry_fee[m] = fee_rate * q * fill
                    sl[m] = stop[m, i]
                    tp[m] = take[m, i]
                    entry_i[m] = i
        e = realised
        for m in range(m_count):
            if not math.isnan(close[m, i]):
                mark[m] = close[m, i]
            if side[m] != 0:
                e = e - entry_fee[m] + side[m] * qty[m] * (mark[m] - entry[m])
            position[m, i] = side[m]
        equity[i] = e
    return kk, refused


@dataclass
class Sleeve:
    label: str  # unique: the market, or the strategy when several share a market
    candles: pl.DataFrame
    strategy: Strategy
    params: dict[str, Any] = field(default_factory=dict)
    market: Market | None = None  # quantity rounding and minimums of this sleeve


@dataclass
class PortfolioResult:
    labels: list[str]
    config: SimulationConfig
    trades: pl.DataFrame  # engine.TRADE_SCHEMA + sleeve
    equity: pl.DataFrame  # open_time, equity, drawdown, drawdown_pct, exposure (sleeves in a position)
    metrics: dict[str, Any]
    breakdown: pl.DataFrame  # per sleeve: trades, wins, net P&L, fees, exposure %, return on initial %
    candle_ms: int


def _levels(buffers: tuple) -> np.ndarray:
    values, bits, offset = buffers
    if bits.shape[0] == 0:
        return values
    present = np.unpackbits(bits, bitorder="little")[offset : offset + values.shape[0]].astype(bool)
    return np.where(present, values, np.nan)


def run_portfolio(sleeves: list[Sleeve], config: SimulationConfig) -> PortfolioResult:
    """Signals per sleeve (each on its own candles), then one walk over the union of times."""
    if not 1 <= len(sleeves) <= MAX_SLEEVES:
        raise ValidationError(
            "sleeves", f"need 1 to {MAX_SLEEVES} (market, strategy) sleeves, got {len(sleeves)}"
        )
    labels = [s.label for s in sleeves]
    if len(set(labels)) != len(labels):
        raise ValidationError("sleeves", f"labels must be unique, got {labels}")
    if config.intrabar == "1m":
        raise ValidationError("intrabar", "'1m' is not available for portfolios; use sl_first or tp_first")
    frames = [normalize_candles(s.candles, name=f"candles of {s.label}") for s in sleeves]
    times = [f.get_column("open_time").to_numpy() for f in frames]
    for s, t in zip(sleeves, times, strict=True):
        if t.shape[0] < 2:
            raise ValidationError(
                "candles", f"{s.label} has {t.shape[0]} candle(s); a backtest needs 2 or more"
            )
    candle_ms = min(infer_candle_ms(t, config.resolution) for t in times)
    axis = np.unique(np.concatenate(times))
    m_count, n = len(sleeves), axis.shape[0]
    prices = {c: np.full((m_count, n), np.nan) for c in ("open", "high", "low", "close")}
    action = np.zeros((m_count, n), np.uint8)
    stop = np.full((m_count, n), np.nan)
    take = np.full((m_count, n), np.nan)
    last = np.empty(m_count, np.int64)
    rounding = []
    for m, (s, frame, t) in enumerate(zip(sleeves, frames, times, strict=True)):
        rows = np.searchsorted(axis, t)
        for c in prices:
            prices[c][m, rows] = frame.get_column(c).to_numpy()
        codes, stops, takes = signal_arrays(
            compute_signals(s.strategy, frame, s.strategy.resolve_params(s.params))
        )
        action[m, rows] = codes
        stop[m, rows] = _levels(stops)
        take[m, rows] = _levels(takes)
        last[m] = rows[-1]
        rounding.append(market_rounding_args(s.market))
    steps, decimals, min_qty, min_notional, max_qty = (np.array(col) for col in zip(*rounding, strict=True))
    ticks = np.array([float(s.market.tick) if config.levels_on_tick and s.market else 0.0 for s in sleeves])
    entries = int(np.count_nonzero((action == LONG) | (action == SHORT)))
    trades = np.empty((k.N_TRADE_FIELDS + 1, entries))
    equity = np.empty(n)
    position = np.empty((m_count, n), np.int8)
    count, refused = simulate_portfolio_nb(
        prices["open"], prices["high"], prices["low"], prices["close"], action, stop, take, last,
        float(config.initial_capital), float(config.risk_per_trade), float(config.leverage),
        float(config.commission), steps.astype(np.float64), decimals.astype(np.int64), min_qty.astype(np.float64),
        min_notional.astype(np.float64), max_qty.astype(np.float64), config.gap_fill == "open",
        config.intrabar == "tp_first", float(config.slippage), float(config.slippage_range), ticks,
        equity, position, trades,
    )  # fmt: skip
    trades = trades[:, :count]
    capital = float(config.initial_capital)
    exposed = np.count_nonzero(position, axis=0)
    metrics = compute_metrics(trades[: k.N_TRADE_FIELDS], curve_stats(equity, exposed, capital), n_candles=n,
                              initial_capital=capital, candle_ms=candle_ms, refused=refused)  # fmt: skip
    sleeve = trades[T_SLEEVE].astype(np.int64)
    frame = trades_frame(trades[: k.N_TRADE_FIELDS], axis, candle_ms).with_columns(
        pl.Series("sleeve", np.array(labels, dtype=object)[sleeve].tolist() if count else [], pl.String)
    )
    peak = np.maximum.accumulate(np.concatenate(([capital], equity)))[1:]
    equity_frame = pl.DataFrame(
        {
            "open_time": pl.Series(axis).cast(pl.Datetime("ms", "UTC")),
            "equity": equity,
            "drawdown": peak - equity,
            "drawdown_pct": (peak - equity) / peak * 100,
            "exposure": exposed.astype(np.int64),
        }
    )
    breakdown = (
        frame.group_by("sleeve")
        .agg(
            pl.len().alias("trades"),
            (pl.col("pnl") > 0).sum().alias("wins"),
            pl.col("pnl").sum().alias("net_pnl"),
            (pl.col("entry_fee") + pl.col("exit_fee")).sum().alias("fees"),
        )
        .join(pl.DataFrame({"sleeve": labels, "order": range(m_count)}), on="sleeve", how="right")
        .sort("order")
        .with_columns(
            pl.col("trades").fill_null(0),
            pl.col("wins").fill_null(0),
            pl.col("net_pnl").fill_null(0.0),
            pl.col("fees").fill_null(0.0),
            pl.Series("exposure_pct", np.count_nonzero(position, axis=1) / n * 100),
        )
        .with_columns((pl.col("net_pnl") / capital * 100).alias("return_on_capital_pct"))
        .select("sleeve", "trades", "wins", "net_pnl", "fees", "exposure_pct", "return_on_capital_pct")
    )
    return PortfolioResult(labels, config, frame, equity_frame, metrics, breakdown, candle_ms)


__all__ = ["EXIT", "PortfolioResult", "Sleeve", "run_portfolio"]
