-- config: materialized=table
-- Per payout: the sum of the balance transactions it carried and the difference from
-- the amount the bank receives (zero to the cent when every transaction is known).
WITH carried AS (
    SELECT
        payout_id,
        count(*) AS transactions_count,
        sum(amount_minor) AS gross_minor,
        sum(fee_minor) AS fee_minor,
        sum(net_minor) AS net_minor
    FROM {{ ref('stg_stripe__balance_transactions') }}
    WHERE payout_id IS NOT NULL AND type <> 'payout'
    GROUP BY payout_id
),

totals AS (
    SELECT
        p.payout_id,
        p.arrival_day,
        p.currency,
        p.status,
        p.automatic,
        p.reconciliation_status,
        p.amount_minor AS payout_amount_minor,
        COALESCE(c.transactions_count, 0) AS transactions_count,
        CAST(COALESCE(c.gross_minor, 0) AS BIGINT) AS gross_minor,
        CAST(COALESCE(c.fee_minor, 0) AS BIGINT) AS fee_minor,
        CAST(COALESCE(c.net_minor, 0) AS BIGINT) AS transactions_net_minor
    FROM {{ ref('stg_stripe__payouts') }} AS p
    LEFT JOIN carried AS c ON c.payout_id = p.payout_id
)

SELECT
    payout_id,
    arrival_day,
    currency,
    status,
    automatic,
    reconciliation_status,
    payout_amount_minor,
    transactions_count,
    gross_minor,
    fee_minor,
    transactions_net_minor,
    payout_amount_minor - transactions_net_minor AS difference_minor,
    CASE WHEN payout_amount_minor = transactions_net_minor THEN 1 ELSE 0 END AS is_balanced,
    {{ to_major('payout_amount_minor', 'currency') }} AS payout_amount,
    {{ to_major('transactions_net_minor', 'currency') }} AS transactions_net,
    {{ to_major('payout_amount_minor - transactions_net_minor', 'currency') }} AS difference
FROM totals
