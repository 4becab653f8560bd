"""Built-in strategies. Each module exposes `signals(candles, params)`, `DEFAULT_PARAMS` and may
expose `check_params(params)` to refuse inconsistent parameters with a clear error."""

BUILTIN_STRATEGIES = ("sma_crossover", "rsi_reversion", "bollinger_breakout", "atr_trend")
