-- config: materialized=table
-- Daily payments per currency: counts, success/failure ratio, gross, refunds,
-- disputes and what is left of the gross after them (before Stripe's fees: those are
-- in balance_daily), in minor units and as decimals.
WITH payments AS (
    SELECT
        created_day AS day,
        currency,
        count(*) AS payments_count,
        sum(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END) AS succeeded_count,
        sum(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) AS failed_count,
        sum(CASE WHEN outcome = 'succeeded' THEN captured_minor ELSE 0 END) AS gross_minor
    FROM {{ ref('stg_stripe__payments') }}
    WHERE currency IS NOT NULL
    GROUP BY created_day, currency
),

refunds AS (
    SELECT
        created_day AS day,
        currency,
        count(*) AS refunds_count,
        sum(amount_minor) AS refunded_minor
    FROM {{ ref('stg_stripe__refunds') }}
    WHERE is_effective = 1
    GROUP BY created_day, currency
),

disputes AS (
    SELECT
        created_day AS day,
        currency,
        count(*) AS disputes_count,
        sum(amount_minor) AS disputed_minor
    FROM {{ ref('stg_stripe__disputes') }}
    GROUP BY created_day, currency
),

days AS (
    SELECT day, currency FROM payments
    UNION
    SELECT day, currency FROM refunds
    UNION
    SELECT day, currency FROM disputes
),

totals AS (
    SELECT
        d.day,
        d.currency,
        COALESCE(p.payments_count, 0) AS payments_count,
        COALESCE(p.succeeded_count, 0) AS succeeded_count,
        COALESCE(p.failed_count, 0) AS failed_count,
        CAST(COALESCE(p.gross_minor, 0) AS BIGINT) AS gross_minor,
        COALESCE(r.refunds_count, 0) AS refunds_count,
        CAST(COALESCE(r.refunded_minor, 0) AS BIGINT) AS refunded_minor,
        COALESCE(x.disputes_count, 0) AS disputes_count,
        CAST(COALESCE(x.disputed_minor, 0) AS BIGINT) AS disputed_minor
    FROM days AS d
    LEFT JOIN payments AS p ON p.day = d.day AND p.currency = d.currency
    LEFT JOIN refunds AS r ON r.day = d.day AND r.currency = d.currency
    LEFT JOIN disputes AS x ON x.day = d.day AND x.currency = d.currency
)

SELECT
    day,
    currency,
    payments_count,
    succeeded_count,
    failed_count,
    {{ safe_divide('succeeded_count', 'succeeded_count + failed_count') }} AS success_ratio,
    {{ safe_divide('failed_count', 'succeeded_count + failed_count') }} AS failure_ratio,
    gross_minor,
    refunds_count,
    refunded_minor,
    disputes_count,
    disputed_minor,
    gross_minor - refunded_minor - disputed_minor AS net_before_fees_minor,
    {{ to_major('gross_minor', 'currency') }} AS gross,
    {{ to_major('refunded_minor', 'currency') }} AS refunded,
    {{ to_major('disputed_minor', 'currency') }} AS disputed,
    {{ to_major('gross_minor - refunded_minor - disputed_minor', 'currency') }} AS net_before_fees
FROM totals
