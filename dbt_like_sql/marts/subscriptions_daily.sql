-- config: materialized=table
-- New and churned subscriptions per UTC day and currency.
WITH new_subscriptions AS (
    SELECT created_day AS day, currency, count(*) AS new_count
    FROM {{ ref('stg_stripe__subscriptions') }}
    GROUP BY created_day, currency
),

churned AS (
    SELECT churned_day AS day, currency, count(*) AS churned_count
    FROM {{ ref('stg_stripe__subscriptions') }}
    WHERE churned_day IS NOT NULL
    GROUP BY churned_day, currency
),

days AS (
    SELECT day, currency FROM new_subscriptions
    UNION
    SELECT day, currency FROM churned
)

SELECT
    d.day,
    d.currency,
    COALESCE(n.new_count, 0) AS new_count,
    COALESCE(c.churned_count, 0) AS churned_count,
    COALESCE(n.new_count, 0) - COALESCE(c.churned_count, 0) AS net_change
FROM days AS d
LEFT JOIN new_subscriptions AS n ON n.day = d.day AND n.currency = d.currency
LEFT JOIN churned AS c ON c.day = d.day AND c.currency = d.currency
WHERE d.day IS NOT NULL
