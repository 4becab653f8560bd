"""Portfolio backtests: one market equals the single backtest trade for trade; several markets
share one capital; several strategies side by side on one market."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data_file
from xcoin_trading.backtest import SimulationConfig, run_backtest
from xcoin_trading.backtest.portfolio import Sleeve, run_portfolio
from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.markets import SPOT_MARKETS
from xcoin_trading.strategy import load_strategy, read_candles_file

TRADE_COLUMNS = ["entry_index", "exit_index", "side", "entry_price", "exit_price", "quantity", "entry_fee",
                 "exit_fee", "pnl", "exit_reason", "ambiguous"]  # fmt: skip


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return read_candles_file(shared_data_file("BTCUSDT-1m-2024-01.parquet"))


@pytest.fixture(scope="module")
def eth() -> pl.DataFrame:
    frame = read_candles_file(shared_data_file("ETHUSDT-1m-2023-04_2024-12.parquet"))
    return frame.filter(pl.col("open_time").is_between(1_704_067_200_000, 1_706_745_600_000, closed="left"))


@pytest.mark.parametrize(
    "config",
    [
        SimulationConfig(commission="0.001"),
        SimulationConfig(commission="0.0005", risk_per_trade="0.5", leverage=3, gap_fill="level",
                         intrabar="tp_first", slippage="0.0003", slippage_range="0.1"),
        SimulationConfig(commission="0.001", market=SPOT_MARKETS["BTCUSDT"], risk_per_trade="0.01"),
    ],
)  # fmt: skip
def test_a_one_market_portfolio_is_the_single_backtest_trade_for_trade(btc, config):
    params = {"fast": 10, "slow": 40, "sl_pct": 0.004, "tp_pct": 0.006}
    single = run_backtest(btc, "sma_crossover", params, config)
    folio = run_portfolio(
        [Sleeve("BTCUSDT", btc, load_strategy("sma_crossover"), params, config.market)], config
    )
    assert single.trades.height > 100
    assert folio.trades.select(TRADE_COLUMNS).equals(single.trades.select(TRADE_COLUMNS))
    assert np.array_equal(
        folio.equity.get_column("equity").to_numpy(), single.equity.get_column("equity").to_numpy()
    )
    for key in ("netPnl", "finalCapital", "totalCommission", "maxDrawdownPct", "sharpeRatio", "exposurePct"):
        assert folio.metrics[key] == pytest.approx(single.metrics[key], rel=1e-9), key


def test_several_markets_share_one_capital(btc, eth):
    config = SimulationConfig(commission="0.001", risk_per_trade="0.5")
    params = {"fast": 10, "slow": 40, "sl_pct": 0.004, "tp_pct": 0.006}
    sma = load_strategy("sma_crossover")
    folio = run_portfolio([Sleeve("BTCUSDT", btc, sma, params), Sleeve("ETHUSDT", eth, sma, params)], config)
    trades = folio.trades
    assert set(trades.get_column("sleeve")) == {"BTCUSDT", "ETHUSDT"}
    # One equity: the realised P&L of every sleeve adds to one capital.
    assert folio.metrics["finalCapital"] == pytest.approx(10_000 + trades.get_column("pnl").sum(), rel=1e-12)
    breakdown = {r["sleeve"]: r for r in folio.breakdown.iter_rows(named=True)}
    for label in ("BTCUSDT", "ETHUSDT"):
        mine = trades.filter(pl.col("sleeve") == label)
        assert breakdown[label]["trades"] == mine.height > 50
        assert breakdown[label]["net_pnl"] == pytest.approx(mine.get_column("pnl").sum())
    # Shared capital: at every entry, margin + fees held by open positions never exceed the equity
    # realised so far (no sleeve spends money another holds).
    events = []
    for r in trades.iter_rows(named=True):
        events.append((r["entry_index"], 1, r["quantity"] * r["entry_price"] + r["entry_fee"], 0.0))
        events.append((r["exit_index"], 0, -(r["quantity"] * r["entry_price"] + r["entry_fee"]), r["pnl"]))
    held, realised = 0.0, 10_000.0
    for _, is_entry, amount, pnl in sorted(events, key=lambda e: (e[0], e[1])):
        held += amount
        realised += pnl
        if is_entry:
            assert held <= realised * (1 + 1e-9)
    # Both were in a position at once at some point: the capital really was shared.
    assert folio.equity.get_column("exposure").max() == 2


def test_several_strategies_side_by_side_on_one_market(btc):
    config = SimulationConfig(commission="0.001", risk_per_trade="0.3")
    sleeves = [
        Sleeve(
            "sma",
            btc,
            load_strategy("sma_crossover"),
            {"fast": 10, "slow": 40, "sl_pct": 0.004, "tp_pct": 0.006},
        ),
        Sleeve("rsi", btc, load_strategy("rsi_reversion"), {}),
    ]
    folio = run_portfolio(sleeves, config)
    assert folio.breakdown.get_column("sleeve").to_list() == ["sma", "rsi"]
    assert (folio.breakdown.get_column("trades") > 0).all()
    assert folio.metrics["totalTrades"] == folio.breakdown.get_column("trades").sum()


def test_bad_portfolios_are_refused_by_name(btc):
    sma = load_strategy("sma_crossover")
    with pytest.raises(ValidationError, match="labels must be unique"):
        run_portfolio([Sleeve("a", btc, sma), Sleeve("a", btc, sma)], SimulationConfig())
    with pytest.raises(ValidationError, match="need 1 to 64"):
        run_portfolio([], SimulationConfig())
    with pytest.raises(ValidationError, match="'1m' is not available for portfolios"):
        run_portfolio([Sleeve("a", btc, sma)], SimulationConfig(intrabar="1m"))
