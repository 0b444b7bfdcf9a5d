-- config: materialized=view
-- One row per tax amount of a credit note (tax_amounts / total_taxes).
SELECT
    n.stripe_credit_note_id AS credit_note_id,
    n.status,
    lower(n.currency) AS currency,
    {{ json_get('tax.value', 'tax_rate_id') }} AS tax_rate_id,
    CAST({{ json_get('tax.value', 'amount_minor') }} AS BIGINT) AS amount_minor,
    CAST({{ json_get('tax.value', 'taxable_amount_minor') }} AS BIGINT) AS taxable_amount_minor,
    CASE WHEN CAST({{ json_get('tax.value', 'inclusive') }} AS TEXT) IN ('true', '1') THEN 1
        ELSE 0
    END AS is_inclusive,
    {{ json_get('tax.value', 'country') }} AS country,
    {{ json_get('tax.value', 'state') }} AS state,
    {{ json_get('tax.value', 'jurisdiction') }} AS jurisdiction,
    COALESCE(
        {{ date_trunc('month', epoch_to_timestamp('n.stripe_created')) }},
        {{ date_trunc('month', 'n.created_at') }}
    ) AS created_month
FROM {{ source('stripe_credit_notes') }} AS n
CROSS JOIN {{ json_each('n.taxes', 'tax') }}
