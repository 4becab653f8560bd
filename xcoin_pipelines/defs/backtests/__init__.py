"""Backtests launched from the Launchpad (one dynamic partition per run) and parameter sweeps."""
