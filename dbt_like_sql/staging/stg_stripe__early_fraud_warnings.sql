-- config: materialized=view
SELECT
    w.stripe_early_fraud_warning_id AS early_fraud_warning_id,
    w.charge_id,
    w.payment_intent_id,
    w.fraud_type,
    CASE WHEN w.actionable THEN 1 ELSE 0 END AS is_actionable,
    COALESCE(
        {{ epoch_to_date('w.stripe_created') }}, {{ date_trunc('day', 'w.created_at') }}
    ) AS created_day
FROM {{ source('stripe_early_fraud_warnings') }} AS w
