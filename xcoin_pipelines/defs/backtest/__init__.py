"""Backtests launched from the UI (one typed run config per run, demo-ready defaults) and sweeps."""
