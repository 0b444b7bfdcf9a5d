-- config: materialized=view
SELECT
    r.stripe_review_id AS review_id,
    r.charge_id,
    r.payment_intent_id,
    CASE WHEN r.open THEN 1 ELSE 0 END AS is_open,
    r.reason,
    r.opened_reason,
    r.closed_reason,
    COALESCE(
        {{ epoch_to_date('r.stripe_created') }}, {{ date_trunc('day', 'r.created_at') }}
    ) AS opened_day,
    {{ date_trunc('day', 'r.closed_at') }} AS closed_day
FROM {{ source('stripe_reviews') }} AS r
