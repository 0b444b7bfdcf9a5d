-- config: materialized=view
SELECT
    p.stripe_payout_id AS payout_id,
    p.amount_minor,
    lower(p.currency) AS currency,
    p.status,
    p.automatic,
    p.method,
    p.destination_type,
    p.reconciliation_status,
    p.failure_code,
    p.failure_message,
    {{ date_trunc('day', 'p.arrival_date') }} AS arrival_day,
    COALESCE(
        {{ epoch_to_date('p.stripe_created') }}, {{ date_trunc('day', 'p.created_at') }}
    ) AS created_day
FROM {{ source('stripe_payouts') }} AS p
