-- config: materialized=view
-- One row per subscription item with its monthly-normalised recurring revenue.
-- Items come from the items JSON list; a row without items contributes its
-- top-level price columns as one item (older payloads carry a single plan).
WITH items AS (
    SELECT
        s.stripe_subscription_id AS subscription_id,
        s.status,
        {{ json_get('item.value', 'price_id') }} AS price_id,
        {{ json_get('item.value', 'product_id') }} AS product_id,
        CAST({{ json_get('item.value', 'quantity') }} AS BIGINT) AS quantity,
        CAST({{ json_get('item.value', 'unit_amount_minor') }} AS BIGINT) AS unit_amount_minor,
        lower(COALESCE({{ json_get('item.value', 'currency') }}, s.currency)) AS currency,
        {{ json_get('item.value', 'interval') }} AS billing_interval,
        CAST({{ json_get('item.value', 'interval_count') }} AS INTEGER) AS interval_count
    FROM {{ source('stripe_subscriptions') }} AS s
    CROSS JOIN {{ json_each('s.items', 'item') }}
    UNION ALL
    SELECT
        s.stripe_subscription_id,
        s.status,
        s.price_id,
        s.product_id,
        s.quantity,
        s.unit_amount_minor,
        lower(s.currency),
        s.billing_interval,
        s.billing_interval_count
    FROM {{ source('stripe_subscriptions') }} AS s
    WHERE {{ json_array_length('s.items') }} = 0 AND s.unit_amount_minor IS NOT NULL
),

normalised AS (
    SELECT
        subscription_id,
        status,
        price_id,
        product_id,
        COALESCE(quantity, 1) AS quantity,
        unit_amount_minor,
        currency,
        billing_interval,
        COALESCE(interval_count, 1) AS interval_count,
        -- months per interval as a fraction: mrr = amount x qty x numerator / denominator
        CASE billing_interval
            WHEN 'month' THEN 1 WHEN 'year' THEN 1 WHEN 'week' THEN 52 WHEN 'day' THEN 365
        END AS per_month_numerator,
        CASE billing_interval
            WHEN 'month' THEN 1 WHEN 'year' THEN 12 WHEN 'week' THEN 12 WHEN 'day' THEN 12
        END AS per_month_denominator
    FROM items
)

SELECT
    subscription_id,
    status,
    price_id,
    product_id,
    quantity,
    unit_amount_minor,
    currency,
    billing_interval,
    interval_count,
    CASE WHEN status IN ('active', 'past_due') THEN 1 ELSE 0 END AS counts_toward_mrr,
    {{ cast_numeric('unit_amount_minor * quantity * per_month_numerator') }}
        / (per_month_denominator * interval_count) AS mrr_minor
FROM normalised
