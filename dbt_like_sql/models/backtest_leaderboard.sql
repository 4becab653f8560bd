-- Backtests ranked by Sharpe ratio, overall and within their strategy. Metrics are the backtest's
-- statistics (JSON numbers or strings), read as DOUBLE: they rank runs, they are not ledger money.
WITH b AS (
    SELECT
        r.id AS backtest_id,
        r.strategy_id,
        r.strategy_code,
        r.user_id,
        r.created_at,
        coalesce(json_extract_string(r.config, '$.symbol'), s.symbol) AS symbol,
        coalesce(json_extract_string(r.config, '$.resolution'), s.resolution) AS resolution,
        TRY_CAST(json_extract_string(r.metrics, '$.totalTrades') AS BIGINT) AS total_trades,
        TRY_CAST(json_extract_string(r.metrics, '$.winRate') AS DOUBLE) AS win_rate,
        TRY_CAST(json_extract_string(r.metrics, '$.totalPnl') AS DOUBLE) AS total_pnl,
        TRY_CAST(json_extract_string(r.metrics, '$.totalPnlPct') AS DOUBLE) AS total_pnl_pct,
        TRY_CAST(json_extract_string(r.metrics, '$.profitFactor') AS DOUBLE) AS profit_factor,
        TRY_CAST(json_extract_string(r.metrics, '$.sharpeRatio') AS DOUBLE) AS sharpe_ratio,
        TRY_CAST(json_extract_string(r.metrics, '$.maxDrawdownPct') AS DOUBLE) AS max_drawdown_pct,
        r.execution_time_ms
    FROM backtest_results AS r
    LEFT JOIN strategies AS s ON s.id = r.strategy_id
)
SELECT
    rank() OVER (ORDER BY sharpe_ratio DESC NULLS LAST) AS rank,
    row_number() OVER (
        PARTITION BY strategy_code ORDER BY sharpe_ratio DESC NULLS LAST, created_at DESC
    ) AS rank_in_strategy,
    *
FROM b
