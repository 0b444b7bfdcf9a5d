-- config: materialized=view
-- One row per checkout session with the days it opened, completed or expired. The
-- customer's details are personal data and are not carried into the models.
SELECT
    s.stripe_checkout_session_id AS checkout_session_id,
    s.status,
    s.payment_status,
    s.mode,
    lower(s.currency) AS currency,
    s.amount_total_minor,
    s.customer_id,
    s.payment_intent_id,
    s.subscription_id,
    COALESCE(
        {{ epoch_to_date('s.stripe_created') }}, {{ date_trunc('day', 's.created_at') }}
    ) AS created_day,
    CASE WHEN s.status = 'complete' THEN COALESCE(
        {{ date_trunc('day', 's.completed_at') }},
        {{ epoch_to_date('s.stripe_created') }},
        {{ date_trunc('day', 's.created_at') }}
    ) END AS completed_day,
    CASE WHEN s.status = 'expired' THEN COALESCE(
        {{ date_trunc('day', 's.expired_at') }}, {{ date_trunc('day', 's.expires_at') }}
    ) END AS expired_day,
    CASE WHEN s.status = 'complete' THEN 1 ELSE 0 END AS is_complete,
    CASE WHEN s.status = 'expired' THEN 1 ELSE 0 END AS is_expired,
    CASE WHEN s.status = 'open' THEN 1 ELSE 0 END AS is_open
FROM {{ source('stripe_checkout_sessions') }} AS s
