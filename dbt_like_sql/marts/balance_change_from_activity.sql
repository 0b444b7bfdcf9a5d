-- config: materialized=table
-- Stripe's "Balance change from activity": per UTC day, settlement currency and
-- reporting category, the count, gross, fees and net of the balance transactions.
SELECT
    created_day AS day,
    currency,
    reporting_category,
    count(*) AS transactions_count,
    CAST(sum(amount_minor) AS BIGINT) AS gross_minor,
    CAST(sum(fee_minor) AS BIGINT) AS fee_minor,
    CAST(sum(net_minor) AS BIGINT) AS net_minor,
    {{ to_major('sum(amount_minor)', 'currency') }} AS gross,
    {{ to_major('sum(fee_minor)', 'currency') }} AS fee,
    {{ to_major('sum(net_minor)', 'currency') }} AS net
FROM {{ ref('stg_stripe__balance_transactions') }}
GROUP BY created_day, currency, reporting_category
