-- config: materialized=view
SELECT
    l.stripe_credit_note_line_item_id AS credit_note_line_item_id,
    l.credit_note_id,
    l.invoice_line_item_id,
    l.type,
    l.amount_minor,
    l.quantity,
    l.unit_amount_minor,
    COALESCE(l.discount_minor, 0) AS discount_minor,
    COALESCE(l.tax_minor, 0) AS tax_minor
FROM {{ source('stripe_credit_note_line_items') }} AS l
