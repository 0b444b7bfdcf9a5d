-- config: materialized=view
-- One row per PaymentIntent (or legacy charge) with a normalised outcome.
SELECT
    p.payment_intent_id,
    p.charge_id,
    p.customer_id,
    p.invoice_id,
    p.status,
    lower(p.currency) AS currency,
    p.amount_minor,
    COALESCE(p.amount_received_minor, p.amount_minor) AS captured_minor,
    p.amount_refunded_minor,
    p.failure_code,
    p.decline_code,
    p.stripe_created,
    COALESCE(
        {{ epoch_to_date('p.stripe_created') }}, {{ date_trunc('day', 'p.created_at') }}
    ) AS created_day,
    CASE
        WHEN p.status = 'succeeded' THEN 'succeeded'
        WHEN p.status = 'failed' OR p.failure_code IS NOT NULL THEN 'failed'
        WHEN p.status = 'canceled' THEN 'canceled'
        ELSE 'pending'
    END AS outcome
FROM {{ source('stripe_payments') }} AS p
