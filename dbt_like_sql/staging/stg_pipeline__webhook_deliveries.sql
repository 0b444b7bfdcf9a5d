-- config: materialized=view
SELECT
    w.id AS delivery_id,
    w.received_at,
    {{ date_trunc('hour', 'w.received_at') }} AS received_hour,
    w.endpoint,
    w.outcome,
    w.status_code,
    w.reason,
    w.stripe_event_id,
    w.event_type,
    w.repeat_count,
    CASE WHEN w.status_code >= 400 THEN 1 ELSE 0 END AS is_rejected
FROM {{ source('webhook_deliveries') }} AS w
