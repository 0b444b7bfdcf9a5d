-- config: materialized=view
-- Discounts with what they apply to. A discount without a subscription or invoice is
-- the customer's: it applies to every subscription of that customer.
SELECT
    d.stripe_discount_id AS discount_id,
    d.coupon_id,
    d.promotion_code_id,
    d.customer_id,
    d.subscription_id,
    d.invoice_id,
    d.invoice_item_id,
    CASE
        WHEN d.invoice_item_id IS NOT NULL THEN 'invoice_item'
        WHEN d.invoice_id IS NOT NULL THEN 'invoice'
        WHEN d.subscription_id IS NOT NULL THEN 'subscription'
        ELSE 'customer'
    END AS applies_to,
    d.start_at,
    d.end_at,
    d.deleted_at,
    CASE
        WHEN d.deleted_at IS NULL AND (d.end_at IS NULL OR d.end_at > {{ now() }}) THEN 1 ELSE 0
    END AS is_active
FROM {{ source('stripe_discounts') }} AS d
