-- config: materialized=view
SELECT
    p.stripe_product_id AS product_id,
    p.name,
    p.type,
    p.active,
    p.default_price_id,
    CASE WHEN p.deleted_at IS NOT NULL THEN 1 ELSE 0 END AS is_deleted,
    p.deleted_at
FROM {{ source('stripe_products') }} AS p
