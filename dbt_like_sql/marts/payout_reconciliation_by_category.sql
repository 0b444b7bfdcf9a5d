-- config: materialized=table
-- Per payout and reporting category: the balance transactions the payout carried.
SELECT
    p.payout_id,
    p.arrival_day,
    p.currency,
    t.reporting_category,
    count(*) AS transactions_count,
    CAST(sum(t.amount_minor) AS BIGINT) AS gross_minor,
    CAST(sum(t.fee_minor) AS BIGINT) AS fee_minor,
    CAST(sum(t.net_minor) AS BIGINT) AS net_minor,
    {{ to_major('sum(t.amount_minor)', 'p.currency') }} AS gross,
    {{ to_major('sum(t.fee_minor)', 'p.currency') }} AS fee,
    {{ to_major('sum(t.net_minor)', 'p.currency') }} AS net
FROM {{ ref('stg_stripe__payouts') }} AS p
JOIN {{ ref('stg_stripe__balance_transactions') }} AS t
    ON t.payout_id = p.payout_id AND t.type <> 'payout'
GROUP BY p.payout_id, p.arrival_day, p.currency, t.reporting_category
