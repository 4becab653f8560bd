-- Every trade went through an entry order recorded before it was sent (linked by trade id, or by
-- the execution and subscription that placed it). Two NOT EXISTS, not one with OR: each is a hash anti-join.
SELECT t.id, t.user_id, t.strategy_id, t.status
FROM trades AS t
WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.leg = 'ENTRY' AND o.trade_id = t.id)
  AND NOT EXISTS (
      SELECT 1
      FROM orders AS o
      WHERE o.leg = 'ENTRY' AND o.execution_id = t.execution_id AND o.subscription_id = t.subscription_id
  )
