-- config: materialized=table
-- Tax per UTC month, currency and tax rate (with the rate's country, state and
-- jurisdiction): collected on paid invoices, given back by credit notes, and net.
WITH collected AS (
    SELECT
        paid_month AS month,
        currency,
        tax_rate_id,
        is_inclusive,
        max(country) AS country,
        max(state) AS state,
        max(jurisdiction) AS jurisdiction,
        count(DISTINCT invoice_id) AS invoices_count,
        sum(taxable_amount_minor) AS taxable_minor,
        sum(amount_minor) AS tax_minor
    FROM {{ ref('stg_stripe__invoice_taxes') }}
    WHERE status = 'paid' AND paid_month IS NOT NULL
    GROUP BY paid_month, currency, tax_rate_id, is_inclusive
),

credited AS (
    SELECT
        created_month AS month,
        currency,
        tax_rate_id,
        is_inclusive,
        max(country) AS country,
        max(state) AS state,
        max(jurisdiction) AS jurisdiction,
        count(DISTINCT credit_note_id) AS credit_notes_count,
        sum(amount_minor) AS credited_tax_minor
    FROM {{ ref('stg_stripe__credit_note_taxes') }}
    WHERE status = 'issued'
    GROUP BY created_month, currency, tax_rate_id, is_inclusive
),

keys AS (
    SELECT month, currency, tax_rate_id, is_inclusive FROM collected
    UNION
    SELECT month, currency, tax_rate_id, is_inclusive FROM credited
),

totals AS (
    SELECT
        k.month,
        k.currency,
        k.tax_rate_id,
        k.is_inclusive,
        COALESCE(c.country, x.country) AS country,
        COALESCE(c.state, x.state) AS state,
        COALESCE(c.jurisdiction, x.jurisdiction) AS jurisdiction,
        COALESCE(c.invoices_count, 0) AS invoices_count,
        CAST(COALESCE(c.taxable_minor, 0) AS BIGINT) AS taxable_minor,
        CAST(COALESCE(c.tax_minor, 0) AS BIGINT) AS tax_minor,
        COALESCE(x.credit_notes_count, 0) AS credit_notes_count,
        CAST(COALESCE(x.credited_tax_minor, 0) AS BIGINT) AS credited_tax_minor
    FROM keys AS k
    LEFT JOIN collected AS c
        ON c.month = k.month AND c.currency = k.currency
        AND c.is_inclusive = k.is_inclusive
        AND COALESCE(c.tax_rate_id, '') = COALESCE(k.tax_rate_id, '')
    LEFT JOIN credited AS x
        ON x.month = k.month AND x.currency = k.currency
        AND x.is_inclusive = k.is_inclusive
        AND COALESCE(x.tax_rate_id, '') = COALESCE(k.tax_rate_id, '')
)

SELECT
    t.month,
    t.currency,
    t.tax_rate_id,
    r.display_name,
    r.percentage,
    t.is_inclusive,
    COALESCE(t.country, r.country) AS country,
    COALESCE(t.state, r.state) AS state,
    COALESCE(t.jurisdiction, r.jurisdiction) AS jurisdiction,
    t.invoices_count,
    t.taxable_minor,
    t.tax_minor,
    t.credit_notes_count,
    t.credited_tax_minor,
    t.tax_minor - t.credited_tax_minor AS net_tax_minor,
    {{ to_major('t.tax_minor', 't.currency') }} AS tax,
    {{ to_major('t.credited_tax_minor', 't.currency') }} AS credited_tax,
    {{ to_major('t.tax_minor - t.credited_tax_minor', 't.currency') }} AS net_tax
FROM totals AS t
LEFT JOIN {{ ref('stg_stripe__tax_rates') }} AS r ON r.tax_rate_id = t.tax_rate_id
