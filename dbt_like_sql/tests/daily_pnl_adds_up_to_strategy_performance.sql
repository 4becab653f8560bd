-- The last running total of daily_pnl equals the all-time realised P&L of strategy_performance.
WITH last_day AS (
    SELECT user_id, strategy_id, arg_max(cumulative_pnl, day) AS cumulative_pnl
    FROM daily_pnl
    GROUP BY user_id, strategy_id
)
SELECT l.user_id, l.strategy_id, l.cumulative_pnl, p.realized_pnl
FROM last_day AS l
LEFT JOIN strategy_performance AS p USING (user_id, strategy_id)
WHERE p.realized_pnl IS NULL OR p.realized_pnl <> l.cumulative_pnl
