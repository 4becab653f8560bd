-- The seed's orders summary per user: totals by state, traded volume (filled qty x average price) and fees.
-- Pending = recorded or resting on the exchange, or unknown until the reconciler asks again.
SELECT
    s.user_id,
    count(*) AS total_orders,
    count(*) FILTER (WHERE o.status = 'FILLED') AS filled_orders,
    count(*) FILTER (WHERE o.status IN ('INTENT', 'SENDING', 'OPEN', 'PARTIALLY_FILLED', 'UNKNOWN')) AS pending_orders,
    count(*) FILTER (WHERE o.status = 'CANCELLED') AS cancelled_orders,
    count(*) FILTER (WHERE o.status = 'REJECTED') AS rejected_orders,
    count(*) FILTER (WHERE o.status = 'LOST') AS lost_orders,
    -- filled_notional = filled_quantity x avg_price, computed exactly by the snapshot
    coalesce(sum(o.filled_notional), 0) AS volume,
    sum(o.fee) AS fees,
    min(o.created_at) AS first_order_at,
    max(o.created_at) AS last_order_at
FROM orders AS o
JOIN subscriptions AS s ON s.id = o.subscription_id
GROUP BY s.user_id
