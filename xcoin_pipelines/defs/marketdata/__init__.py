"""Market data: candle assets per resolution (symbol × day), the DuckDB catalog, schedules."""
