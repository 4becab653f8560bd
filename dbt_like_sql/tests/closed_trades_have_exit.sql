-- A closed trade must say how it closed: exit price, exit time and realised P&L.
SELECT id, user_id, strategy_id, exit_price, exit_time, pnl
FROM trades
WHERE status = 'CLOSED' AND (exit_price IS NULL OR exit_time IS NULL OR pnl IS NULL)
