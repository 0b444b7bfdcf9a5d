-- config: materialized=view
SELECT
    r.stripe_refund_id AS refund_id,
    r.payment_intent_id,
    r.charge_id,
    r.amount_minor,
    lower(r.currency) AS currency,
    r.status,
    r.reason,
    COALESCE(
        {{ epoch_to_date('r.stripe_created') }}, {{ date_trunc('day', 'r.created_at') }}
    ) AS created_day,
    CASE WHEN r.status IN ('succeeded', 'pending') THEN 1 ELSE 0 END AS is_effective
FROM {{ source('stripe_refunds') }} AS r
