-- The seed's strategyPerformance, per user and strategy, all time: realised P&L, trades, win rate,
-- and is_active = the user's subscription is active and not paused on a live, undeleted strategy.
WITH pnl AS (
    SELECT
        user_id,
        strategy_id,
        sum(trades) AS trades,
        sum(wins) AS wins,
        sum(losses) AS losses,
        sum(realized_pnl) AS realized_pnl,
        sum(gross_profit) AS gross_profit,
        sum(gross_loss) AS gross_loss,
        sum(fees) AS fees,
        max(day) AS last_trade_day
    FROM daily_pnl
    GROUP BY user_id, strategy_id
),
subscribed AS (
    SELECT user_id, strategy_id, bool_or(is_active AND NOT is_paused) AS running
    FROM subscriptions
    GROUP BY user_id, strategy_id
),
open_trades AS (
    SELECT user_id, strategy_id, count(*) AS open_trades
    FROM trades
    WHERE status = 'OPEN'
    GROUP BY user_id, strategy_id
)
SELECT
    k.user_id,
    k.strategy_id,
    s.code AS strategy_code,
    s.name AS strategy_name,
    s.symbol,
    coalesce(p.trades, 0) AS trades,
    coalesce(p.wins, 0) AS wins,
    coalesce(p.losses, 0) AS losses,
    round(100.0 * coalesce(p.wins, 0) / nullif(p.trades, 0), 2) AS win_rate,
    coalesce(p.realized_pnl, 0) AS realized_pnl,
    coalesce(p.gross_profit, 0) AS gross_profit,
    coalesce(p.gross_loss, 0) AS gross_loss,
    coalesce(p.fees, 0) AS fees,
    coalesce(o.open_trades, 0) AS open_trades,
    p.last_trade_day,
    coalesce(sub.running, FALSE) AND s.is_active AND s.deleted_at IS NULL AS is_active
FROM (
    SELECT user_id, strategy_id FROM pnl
    UNION
    SELECT user_id, strategy_id FROM subscribed
    UNION
    SELECT user_id, strategy_id FROM open_trades
) AS k
JOIN strategies AS s ON s.id = k.strategy_id
LEFT JOIN pnl AS p USING (user_id, strategy_id)
LEFT JOIN subscribed AS sub USING (user_id, strategy_id)
LEFT JOIN open_trades AS o USING (user_id, strategy_id)
