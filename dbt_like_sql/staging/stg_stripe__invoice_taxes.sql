-- config: materialized=view
-- One row per tax amount of an invoice (Stripe's total_tax_amounts / total_taxes).
SELECT
    t.stripe_invoice_id AS invoice_id,
    i.status,
    lower(COALESCE(t.currency, i.currency)) AS currency,
    {{ json_get('tax.value', 'tax_rate_id') }} AS tax_rate_id,
    CAST({{ json_get('tax.value', 'amount_minor') }} AS BIGINT) AS amount_minor,
    CAST({{ json_get('tax.value', 'taxable_amount_minor') }} AS BIGINT) AS taxable_amount_minor,
    CASE WHEN CAST({{ json_get('tax.value', 'inclusive') }} AS TEXT) IN ('true', '1') THEN 1
        ELSE 0
    END AS is_inclusive,
    {{ json_get('tax.value', 'taxability_reason') }} AS taxability_reason,
    {{ json_get('tax.value', 'country') }} AS country,
    {{ json_get('tax.value', 'state') }} AS state,
    {{ json_get('tax.value', 'jurisdiction') }} AS jurisdiction,
    CASE WHEN i.status = 'paid' THEN {{ date_trunc('month', 'i.paid_at') }} END AS paid_month
FROM {{ source('stripe_invoice_totals') }} AS t
CROSS JOIN {{ json_each('t.taxes', 'tax') }}
LEFT JOIN {{ source('stripe_invoices') }} AS i ON i.stripe_invoice_id = t.stripe_invoice_id
WHERE t.deleted_at IS NULL
