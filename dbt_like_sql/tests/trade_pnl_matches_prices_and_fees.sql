-- Realised P&L = (exit - entry) x qty for LONG (reversed for SHORT) minus entry and exit fees,
-- and fees = entry_fee + exit_fee. Tolerance 1e-8 for a reconciler that rounds to 8 places.
WITH closed AS (
    SELECT
        id,
        pnl,
        fees,
        entry_fee,
        exit_fee,
        (CASE side WHEN 'SHORT' THEN -1 ELSE 1 END)
            * (CAST(exit_price AS DECIMAL(38, 10)) - CAST(entry_price AS DECIMAL(38, 10)))
            * CAST(quantity AS DECIMAL(38, 10))
            - entry_fee - exit_fee AS expected_pnl
    FROM trades
    WHERE status = 'CLOSED' AND exit_price IS NOT NULL AND entry_price IS NOT NULL AND pnl IS NOT NULL
)
SELECT id, pnl, expected_pnl, fees, entry_fee, exit_fee
FROM closed
WHERE abs(pnl - expected_pnl) > 0.00000001 OR fees <> entry_fee + exit_fee
