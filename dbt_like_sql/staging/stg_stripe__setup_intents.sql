-- config: materialized=view
SELECT
    i.stripe_setup_intent_id AS setup_intent_id,
    i.status,
    i.customer_id,
    i.payment_method_id,
    i.usage,
    i.cancellation_reason,
    i.last_error_code,
    i.last_error_decline_code,
    COALESCE(
        {{ epoch_to_date('i.stripe_created') }}, {{ date_trunc('day', 'i.created_at') }}
    ) AS created_day,
    CASE WHEN i.status = 'succeeded' THEN 1 ELSE 0 END AS is_succeeded
FROM {{ source('stripe_setup_intents') }} AS i
