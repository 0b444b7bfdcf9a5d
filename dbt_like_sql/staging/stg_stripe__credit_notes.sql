-- config: materialized=view
SELECT
    n.stripe_credit_note_id AS credit_note_id,
    n.invoice_id,
    n.customer_id,
    n.status,
    n.type,
    n.reason,
    lower(n.currency) AS currency,
    n.amount_minor,
    n.subtotal_minor,
    n.total_minor,
    COALESCE(n.discount_minor, 0) AS discount_minor,
    COALESCE(n.tax_minor, 0) AS tax_minor,
    n.out_of_band_minor,
    {{ json_array_length('n.refund_ids') }} AS refunds_count,
    COALESCE(
        {{ epoch_to_date('n.stripe_created') }}, {{ date_trunc('day', 'n.created_at') }}
    ) AS created_day,
    COALESCE(
        {{ date_trunc('month', epoch_to_timestamp('n.stripe_created')) }},
        {{ date_trunc('month', 'n.created_at') }}
    ) AS created_month,
    CASE WHEN n.status = 'issued' THEN 1 ELSE 0 END AS is_effective
FROM {{ source('stripe_credit_notes') }} AS n
