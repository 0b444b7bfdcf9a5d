-- config: materialized=table
-- Fees and net per UTC day and settlement currency: what the activity of the day
-- (everything but payouts) added to the Stripe balance, before and after Stripe's fees.
SELECT
    created_day AS day,
    currency,
    count(*) AS transactions_count,
    CAST(sum(amount_minor) AS BIGINT) AS amount_minor,
    CAST(sum(fee_minor) AS BIGINT) AS fee_minor,
    CAST(sum(net_minor) AS BIGINT) AS net_minor,
    {{ to_major('sum(amount_minor)', 'currency') }} AS amount,
    {{ to_major('sum(fee_minor)', 'currency') }} AS fee,
    {{ to_major('sum(net_minor)', 'currency') }} AS net
FROM {{ ref('stg_stripe__balance_transactions') }}
WHERE is_payout = 0
GROUP BY created_day, currency
