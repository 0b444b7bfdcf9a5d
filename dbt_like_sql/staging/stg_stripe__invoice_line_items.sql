-- config: materialized=view
-- One row per invoice line that is still on its invoice.
SELECT
    l.stripe_line_item_id AS line_item_id,
    l.invoice_id,
    l.type,
    l.subscription_id,
    l.subscription_item_id,
    l.invoice_item_id,
    l.price_id,
    l.product_id,
    lower(l.currency) AS currency,
    l.amount_minor,
    l.quantity,
    COALESCE(l.discount_minor, 0) AS discount_minor,
    COALESCE(l.tax_minor, 0) AS tax_minor,
    CASE WHEN l.proration THEN 1 ELSE 0 END AS is_proration,
    {{ date_trunc('day', 'l.period_start') }} AS period_start_day,
    {{ date_trunc('day', 'l.period_end') }} AS period_end_day
FROM {{ source('stripe_invoice_line_items') }} AS l
WHERE l.deleted_at IS NULL
