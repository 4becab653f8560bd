"""Live trading: candle registry, locks, the execution coordinator (run once, fan out), order placement."""
