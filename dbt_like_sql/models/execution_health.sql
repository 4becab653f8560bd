-- Per strategy: candle-close executions by status, duration (median, p95) and why runs failed.
WITH reasons AS (
    SELECT
        strategy_id,
        coalesce(left(split_part(error, chr(10), 1), 200), '(no error recorded)') AS reason,
        count(*) AS executions
    FROM strategy_executions
    WHERE status = 'FAILED'
    GROUP BY ALL
),
failure_reasons AS (
    SELECT
        strategy_id,
        list(struct_pack(reason := reason, executions := executions) ORDER BY executions DESC, reason)
            AS failure_reasons
    FROM reasons
    GROUP BY strategy_id
)
SELECT
    e.strategy_id,
    s.code AS strategy_code,
    s.name AS strategy_name,
    count(*) AS executions,
    count(*) FILTER (WHERE e.status = 'COMPLETED') AS completed,
    count(*) FILTER (WHERE e.status = 'FAILED') AS failed,
    count(*) FILTER (WHERE e.status = 'SKIPPED') AS skipped,
    count(*) FILTER (WHERE e.status = 'NO_SIGNAL') AS no_signal,
    count(*) FILTER (WHERE e.status = 'RUNNING') AS running,
    round(100.0 * count(*) FILTER (WHERE e.status = 'FAILED') / count(*), 2) AS failure_rate_pct,
    quantile_cont(e.duration_ms, 0.5) AS median_duration_ms,
    quantile_cont(e.duration_ms, 0.95) AS p95_duration_ms,
    sum(e.trades_created) AS trades_created,
    max(e.scheduled_at) AS last_scheduled_at,
    any_value(f.failure_reasons) AS failure_reasons
FROM strategy_executions AS e
JOIN strategies AS s ON s.id = e.strategy_id
LEFT JOIN failure_reasons AS f ON f.strategy_id = e.strategy_id
GROUP BY e.strategy_id, s.code, s.name
