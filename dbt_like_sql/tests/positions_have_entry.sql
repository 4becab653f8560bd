-- An open position has a positive quantity and the price it was entered at.
SELECT trade_id, user_id, symbol, quantity, entry_price
FROM positions_current
WHERE entry_price IS NULL OR entry_price <= 0 OR quantity <= 0
