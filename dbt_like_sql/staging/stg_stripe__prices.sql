-- config: materialized=view
-- Prices and legacy plans (one row per id: the prices API shows a plan as a price).
SELECT
    p.stripe_price_id AS price_id,
    p.product_id,
    p.nickname,
    p.lookup_key,
    p.active,
    lower(p.currency) AS currency,
    p.unit_amount_minor,
    p.type,
    p.recurring_interval AS billing_interval,
    COALESCE(p.recurring_interval_count, 1) AS interval_count,
    p.recurring_usage_type AS usage_type,
    CASE WHEN p.deleted_at IS NOT NULL THEN 1 ELSE 0 END AS is_deleted
FROM {{ source('stripe_prices') }} AS p
