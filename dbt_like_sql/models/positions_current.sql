-- Open positions (trades whose entry filled and which have not closed). Unrealised P&L needs a
-- current price, so it is computed at query time (xcoin_trading.analytics.pnl.positions_current).
SELECT
    t.id AS trade_id,
    t.user_id,
    t.subscription_id,
    t.strategy_id,
    s.code AS strategy_code,
    s.name AS strategy_name,
    t.symbol,
    t.market_type,
    t.side,
    t.quantity,
    t.leverage,
    t.entry_price,
    t.entry_time,
    t.stop_loss,
    t.take_profit,
    t.entry_fee,
    -- DECIMAL(38,18) x DECIMAL(38,18) would need scale 36; 10 places cover every CoinDCX market.
    CAST(t.entry_price AS DECIMAL(38, 10)) * CAST(t.quantity AS DECIMAL(38, 10)) AS notional
FROM trades AS t
JOIN strategies AS s ON s.id = t.strategy_id
WHERE t.status = 'OPEN'
