"""Backtests: numba kernel (`kernel`), user-facing API (`engine`), `metrics`, `report`, `sweep`."""

from xcoin_trading.backtest.engine import BacktestResult, SimulationConfig, run_backtest, simulate

__all__ = ["BacktestResult", "SimulationConfig", "run_backtest", "simulate"]
