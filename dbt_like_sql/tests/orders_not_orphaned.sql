-- Orders point at rows that exist, and every platform order belongs to a subscription
-- (only EXTERNAL orders, found on the exchange, may have none).
SELECT o.id, o.client_order_id, o.trade_id, o.subscription_id, o.execution_id, o.status
FROM orders AS o
LEFT JOIN trades AS t ON t.id = o.trade_id
LEFT JOIN subscriptions AS s ON s.id = o.subscription_id
LEFT JOIN strategy_executions AS e ON e.id = o.execution_id
WHERE (o.trade_id IS NOT NULL AND t.id IS NULL)
   OR (o.subscription_id IS NOT NULL AND s.id IS NULL)
   OR (o.execution_id IS NOT NULL AND e.id IS NULL)
   OR (o.subscription_id IS NULL AND o.status <> 'EXTERNAL')
