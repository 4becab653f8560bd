"""The engine against a plain-Python implementation of the SMA-SLTP spec (its rules: docs/backtesting.md,
"The SMA-SLTP reference"), trade by trade, on real candles. The reference below is written from the
spec only (no engine code)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import polars as pl
import pytest

from tests.conftest import shared_data_file
from tests.fixtures.sma_spec import running_sma
from xcoin_trading.backtest import SimulationConfig, run_backtest
from xcoin_trading.strategy import read_candles_file


def sma_sltp_reference(
    o,
    h,
    lo,
    c,
    *,
    fast=20,
    slow=50,
    sl_pct=0.02,
    tp_pct=0.04,
    fee=0.001,
    risk=0.02,
    init_equity=10_000.0,
    long_short=True,
    slip=0.0,
):
    """SMA-SLTP v1, literally: running-sum SMAs, stops before signals, fills at the level.

    `slip` (beyond the spec, the simulator's --slippage): market fills (entry, signal/END exit, stop
    loss) move that fraction against the trader; levels stay where the signal put them (from the
    close); take profits fill at their level."""
    n = len(c)

    f, s = running_sma(c, fast), running_sma(c, slow)
    equity = init_equity
    pos = None  # dict(side, entry_i, E, qty, SL, TP)
    trades = []

    def close_pos(i, price, reason):
        nonlocal equity, pos
        d = pos["side"]
        if reason != "TP" and slip:
            price = price - d * price * slip  # the close or the stop level, slipped
        pnl = d * pos["qty"] * (price - pos["E"]) - fee * pos["qty"] * pos["E"] - fee * pos["qty"] * price
        equity += pnl
        trades.append(
            (pos["entry_i"], i, "LONG" if d == 1 else "SHORT", pos["E"], price, pos["qty"], pnl, reason)
        )
        pos = None

    def open_pos(i, d):
        nonlocal pos
        SL = c[i] * (1 - sl_pct) if d == 1 else c[i] * (1 + sl_pct)
        TP = c[i] * (1 + tp_pct) if d == 1 else c[i] * (1 - tp_pct)
        E = c[i] + d * c[i] * slip if slip else c[i]
        qty = min(equity * risk / abs(E - SL), equity / (E * (1 + fee)))
        pos = {"side": d, "entry_i": i, "E": E, "qty": qty, "SL": SL, "TP": TP}

    for i in range(n):
        if pos is not None and pos["entry_i"] < i:
            if pos["side"] == 1:
                if lo[i] <= pos["SL"]:
                    close_pos(i, pos["SL"], "SL")
                elif h[i] >= pos["TP"]:
                    close_pos(i, pos["TP"], "TP")
            else:
                if h[i] >= pos["SL"]:
                    close_pos(i, pos["SL"], "SL")
                elif lo[i] <= pos["TP"]:
                    close_pos(i, pos["TP"], "TP")
        if i == n - 1 or i < slow:
            continue
        up = f[i] > s[i] and f[i - 1] <= s[i - 1]
        down = f[i] < s[i] and f[i - 1] >= s[i - 1]
        if not long_short:
            if down and pos is not None:
                close_pos(i, c[i], "SIGNAL")
            if up and pos is None:
                open_pos(i, 1)
        else:
            if up:
                if pos is not None and pos["side"] == -1:
                    close_pos(i, c[i], "SIGNAL")
                if pos is None:
                    open_pos(i, 1)
            if down:
                if pos is not None and pos["side"] == 1:
                    close_pos(i, c[i], "SIGNAL")
                if pos is None:
                    open_pos(i, -1)
    if pos is not None:
        close_pos(n - 1, c[n - 1], "END")
    return trades, equity


SPEC_CONFIG = SimulationConfig(
    initial_capital=10_000,
    risk_per_trade="0.02",
    leverage=1,
    commission="0.001",
    gap_fill="level",
    intrabar="sl_first",
)


@pytest.mark.parametrize(
    ("data_file", "long_short", "params"),
    [
        ("BTCUSDT-1m-2024-01.parquet", True, {}),
        ("BTCUSDT-1m-2024-01.parquet", False, {}),
        ("XRPUSDT-1m-2021-04_2021-06.parquet", True, {}),  # has real gaps and violent candles
        (
            "SOLUSDT-5m-2024-05_2024-12.parquet",
            True,
            {"fast": 10, "slow": 30, "sl_pct": 0.01, "tp_pct": 0.015},
        ),
        (
            "BTCUSDT-1h-2017-08_2024-12.parquet",
            False,
            {"fast": 24, "slow": 96, "sl_pct": 0.05, "tp_pct": 0.1},
        ),
    ],
)
def test_engine_reproduces_the_sma_sltp_reference_trade_by_trade(data_file, long_short, params):
    candles = read_candles_file(shared_data_file(data_file))
    p = {"fast": 20, "slow": 50, "sl_pct": 0.02, "tp_pct": 0.04} | params
    cols = [candles.get_column(x).to_list() for x in ("open", "high", "low", "close")]
    ref_trades, ref_equity = sma_sltp_reference(*cols, long_short=long_short, **p)

    mode = "long_short" if long_short else "long_only"
    result = run_backtest(candles, "sma_crossover", p | {"mode": mode}, SPEC_CONFIG)
    got = result.trades.select(
        "entry_index", "exit_index", "side", "entry_price", "exit_price", "quantity", "pnl", "exit_reason"
    ).rows()

    assert len(ref_trades) > 20
    assert len(got) == len(ref_trades)
    for g, r in zip(got, ref_trades, strict=True):
        assert g[0:3] == r[0:3], (g, r)
        assert g[3] == r[3]
        assert g[4] == pytest.approx(r[4], rel=1e-9, abs=0), (g, r)
        assert g[7] == r[7], (g, r)
    ref_pnl = ref_equity - 10_000
    assert abs(result.metrics["netPnl"] - ref_pnl) <= 1e-6 * abs(ref_pnl)
    assert result.metrics["finalCapital"] == pytest.approx(ref_equity, rel=1e-9)
    assert result.equity.get_column("equity")[-1] == pytest.approx(ref_equity, rel=1e-9)


@pytest.mark.parametrize("long_short", [True, False])
def test_slippage_moves_market_fills_against_the_trader_as_the_reference_says(long_short):
    candles = read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet"))
    p = {"fast": 10, "slow": 40, "sl_pct": 0.004, "tp_pct": 0.006}
    cols = [candles.get_column(x).to_list() for x in ("open", "high", "low", "close")]
    ref_trades, ref_equity = sma_sltp_reference(*cols, long_short=long_short, slip=0.0005, **p)
    config = replace(SPEC_CONFIG, slippage=Decimal("0.0005"))
    mode = "long_short" if long_short else "long_only"
    got = run_backtest(candles, "sma_crossover", p | {"mode": mode}, config)
    rows = got.trades.select(
        "entry_index", "exit_index", "side", "entry_price", "exit_price", "exit_reason"
    ).rows()
    assert len(rows) == len(ref_trades) > 100
    for g, r in zip(rows, ref_trades, strict=True):
        assert g[0:3] == r[0:3] and g[5] == r[7], (g, r)
        assert g[3] == pytest.approx(r[3], rel=1e-12) and g[4] == pytest.approx(r[4], rel=1e-12), (g, r)
    assert got.metrics["finalCapital"] == pytest.approx(ref_equity, rel=1e-9)
    # It costs money: the same trades without slippage end richer.
    plain = run_backtest(candles, "sma_crossover", p | {"mode": mode}, SPEC_CONFIG)
    assert plain.metrics["finalCapital"] > got.metrics["finalCapital"]


def test_reference_covers_every_exit_reason():
    candles = read_candles_file(shared_data_file("XRPUSDT-1m-2021-04_2021-06.parquet"))
    result = run_backtest(candles, "sma_crossover", {"sl_pct": 0.005, "tp_pct": 0.01}, SPEC_CONFIG)
    reasons = set(result.trades.get_column("exit_reason").unique())
    assert {"SL", "TP", "SIGNAL"} <= reasons
    assert result.trades.filter(pl.col("exit_reason") == "SL").height > 0
