-- config: materialized=view
SELECT
    t.stripe_balance_transaction_id AS balance_transaction_id,
    t.type,
    COALESCE(t.reporting_category, t.type) AS reporting_category,
    t.amount_minor,
    t.fee_minor,
    t.net_minor,
    lower(t.currency) AS currency,
    t.exchange_rate,
    t.source_id,
    t.source_type,
    t.payout_id,
    t.status,
    COALESCE(
        {{ epoch_to_date('t.stripe_created') }}, {{ date_trunc('day', 't.created_at') }}
    ) AS created_day,
    {{ date_trunc('day', 't.available_on') }} AS available_day,
    CASE WHEN t.type IN ('payout', 'payout_cancel', 'payout_failure') THEN 1 ELSE 0 END
        AS is_payout
FROM {{ source('stripe_balance_transactions') }} AS t
