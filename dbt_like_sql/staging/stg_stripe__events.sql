-- config: materialized=view
-- The raw event queue, with processing lag and the error flags the health mart counts.
SELECT
    e.id AS event_pk,
    e.stripe_event_id,
    e.event_type,
    e.object_id,
    e.status,
    e.source,
    e.endpoint,
    e.livemode,
    e.retry_count,
    e.stripe_created,
    e.received_at,
    e.processed_at,
    e.next_retry_at,
    {{ date_trunc('hour', 'e.received_at') }} AS received_hour,
    CASE
        WHEN e.processed_at IS NOT NULL
            THEN {{ seconds_between('e.received_at', 'e.processed_at') }}
    END AS processing_lag_seconds,
    CASE WHEN e.status IN ('pending', 'retry', 'processing') THEN 1 ELSE 0 END AS is_open,
    CASE WHEN e.status = 'dead_letter' THEN 1 ELSE 0 END AS is_dead_letter,
    CASE WHEN e.retry_count > 0 OR e.status IN ('retry', 'dead_letter') THEN 1 ELSE 0 END
        AS had_error
FROM {{ source('stripe_events') }} AS e
