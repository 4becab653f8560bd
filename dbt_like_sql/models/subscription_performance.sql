-- Per subscription: terms, state and what its trades earned (closed trades; return on its capital).
WITH t AS (
    SELECT
        subscription_id,
        count(*) FILTER (WHERE status = 'CLOSED') AS closed_trades,
        count(*) FILTER (WHERE status = 'CLOSED' AND pnl > 0) AS wins,
        count(*) FILTER (WHERE status = 'CLOSED' AND pnl < 0) AS losses,
        count(*) FILTER (WHERE status = 'OPEN') AS open_trades,
        coalesce(sum(pnl) FILTER (WHERE status = 'CLOSED'), 0) AS realized_pnl,
        coalesce(sum(fees) FILTER (WHERE status = 'CLOSED'), 0) AS fees,
        max(exit_time) AS last_exit_time
    FROM trades
    GROUP BY subscription_id
)
SELECT
    s.id AS subscription_id,
    s.user_id,
    s.strategy_id,
    st.code AS strategy_code,
    s.capital,
    s.risk_per_trade,
    s.leverage,
    s.is_active,
    s.is_paused,
    s.subscribed_at,
    s.unsubscribed_at,
    coalesce(t.closed_trades, 0) AS closed_trades,
    coalesce(t.wins, 0) AS wins,
    coalesce(t.losses, 0) AS losses,
    round(100.0 * coalesce(t.wins, 0) / nullif(t.closed_trades, 0), 2) AS win_rate,
    coalesce(t.open_trades, 0) AS open_trades,
    coalesce(t.realized_pnl, 0) AS realized_pnl,
    coalesce(t.fees, 0) AS fees,
    round(100 * coalesce(t.realized_pnl, 0) / nullif(s.capital, 0), 4) AS return_pct,
    t.last_exit_time,
    s.total_pnl AS recorded_total_pnl
FROM subscriptions AS s
JOIN strategies AS st ON st.id = s.strategy_id
LEFT JOIN t ON t.subscription_id = s.id
