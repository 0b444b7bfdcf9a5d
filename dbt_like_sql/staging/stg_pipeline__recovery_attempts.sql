-- config: materialized=view
SELECT
    a.id AS recovery_id,
    a.payment_intent_id,
    a.invoice_id,
    a.customer_id,
    a.status,
    COALESCE(a.recovery_strategy, 'unknown') AS recovery_strategy,
    a.attempt_count,
    a.failure_code,
    a.decline_code,
    a.amount_minor,
    lower(a.currency) AS currency,
    a.last_error_type,
    a.created_at,
    CASE WHEN a.status IN ('recovered', 'succeeded', 'paid') THEN 1 ELSE 0 END AS is_recovered,
    CASE
        WHEN a.status IN ('failed', 'exhausted', 'abandoned', 'canceled', 'uncollectible')
            THEN 1 ELSE 0
    END AS is_lost
FROM {{ source('payment_recovery_attempts') }} AS a
