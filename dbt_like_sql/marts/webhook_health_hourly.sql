-- config: materialized=table
-- Webhook processing health per UTC hour of arrival: volume, processing lag
-- percentiles, error rate, retries and dead letters, and rejected deliveries.
WITH events AS (
    SELECT
        received_hour,
        is_open,
        is_dead_letter,
        had_error,
        retry_count,
        status,
        processing_lag_seconds,
        {{ percentile_window('processing_lag_seconds', 'received_hour') }}
    FROM {{ ref('stg_stripe__events') }}
),

event_hours AS (
    SELECT
        received_hour,
        count(*) AS events_received,
        sum(CASE WHEN status IN ('processed', 'ignored') THEN 1 ELSE 0 END) AS events_processed,
        sum(is_open) AS events_open,
        sum(is_dead_letter) AS dead_letters,
        sum(had_error) AS events_with_errors,
        sum(retry_count) AS retries,
        {{ percentile_cont(0.5, 'processing_lag_seconds') }} AS lag_p50_seconds,
        {{ percentile_cont(0.95, 'processing_lag_seconds') }} AS lag_p95_seconds,
        max(processing_lag_seconds) AS lag_max_seconds
    FROM events
    GROUP BY received_hour
),

delivery_hours AS (
    SELECT
        received_hour,
        sum(repeat_count) AS deliveries,
        sum(CASE WHEN is_rejected = 1 THEN repeat_count ELSE 0 END) AS deliveries_rejected
    FROM {{ ref('stg_pipeline__webhook_deliveries') }}
    GROUP BY received_hour
),

hours AS (
    SELECT received_hour FROM event_hours
    UNION
    SELECT received_hour FROM delivery_hours
)

SELECT
    h.received_hour AS hour,
    COALESCE(e.events_received, 0) AS events_received,
    COALESCE(e.events_processed, 0) AS events_processed,
    COALESCE(e.events_open, 0) AS events_open,
    COALESCE(e.dead_letters, 0) AS dead_letters,
    COALESCE(e.events_with_errors, 0) AS events_with_errors,
    CAST(COALESCE(e.retries, 0) AS BIGINT) AS retries,
    {{ safe_divide('e.events_with_errors', 'e.events_received') }} AS error_rate,
    {{ cast_numeric('e.lag_p50_seconds') }} AS lag_p50_seconds,
    {{ cast_numeric('e.lag_p95_seconds') }} AS lag_p95_seconds,
    {{ cast_numeric('e.lag_max_seconds') }} AS lag_max_seconds,
    CAST(COALESCE(d.deliveries, 0) AS BIGINT) AS deliveries,
    CAST(COALESCE(d.deliveries_rejected, 0) AS BIGINT) AS deliveries_rejected
FROM hours AS h
LEFT JOIN event_hours AS e ON e.received_hour = h.received_hour
LEFT JOIN delivery_hours AS d ON d.received_hour = h.received_hour
