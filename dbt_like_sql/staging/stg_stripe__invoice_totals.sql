-- config: materialized=view
-- One row per invoice with Stripe's totals and the invoice's status and paid day.
-- Deleted drafts are left out.
SELECT
    t.stripe_invoice_id AS invoice_id,
    i.customer_id,
    i.subscription_id,
    i.payment_intent_id,
    i.charge_id,
    i.status,
    lower(COALESCE(t.currency, i.currency)) AS currency,
    t.subtotal_minor,
    t.total_minor,
    COALESCE(t.discount_minor, 0) AS discount_minor,
    COALESCE(t.tax_minor, 0) AS tax_minor,
    t.total_minor + COALESCE(t.discount_minor, 0) AS billed_minor,
    COALESCE(
        {{ epoch_to_date('t.stripe_created') }}, {{ date_trunc('day', 't.created_at') }}
    ) AS created_day,
    CASE WHEN i.status = 'paid' THEN {{ date_trunc('day', 'i.paid_at') }} END AS paid_day,
    CASE WHEN i.status = 'paid' THEN {{ date_trunc('month', 'i.paid_at') }} END AS paid_month
FROM {{ source('stripe_invoice_totals') }} AS t
LEFT JOIN {{ source('stripe_invoices') }} AS i ON i.stripe_invoice_id = t.stripe_invoice_id
WHERE t.deleted_at IS NULL
