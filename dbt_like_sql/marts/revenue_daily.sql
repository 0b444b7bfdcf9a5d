-- config: materialized=table
-- Revenue per UTC day and currency, net of discounts, credit notes and refunds.
WITH invoiced AS (
    SELECT
        paid_day AS day,
        currency,
        count(*) AS invoices_paid_count,
        sum(billed_minor) AS invoiced_minor,
        sum(discount_minor) AS discounts_minor
    FROM {{ ref('stg_stripe__invoice_totals') }}
    WHERE status = 'paid' AND paid_day IS NOT NULL
    GROUP BY paid_day, currency
),

invoice_payments AS (
    SELECT payment_intent_id AS payment_id FROM {{ ref('stg_stripe__invoice_totals') }}
    WHERE payment_intent_id IS NOT NULL
    UNION
    SELECT charge_id FROM {{ ref('stg_stripe__invoice_totals') }}
    WHERE charge_id IS NOT NULL
),

one_off AS (
    SELECT
        p.created_day AS day,
        p.currency,
        count(*) AS one_off_count,
        sum(p.captured_minor) AS one_off_minor
    FROM {{ ref('stg_stripe__payments') }} AS p
    WHERE p.outcome = 'succeeded' AND p.currency IS NOT NULL AND p.invoice_id IS NULL
        AND p.payment_intent_id NOT IN (SELECT payment_id FROM invoice_payments)
        AND COALESCE(p.charge_id, '') NOT IN (SELECT payment_id FROM invoice_payments)
    GROUP BY p.created_day, p.currency
),

credited AS (
    SELECT
        created_day AS day,
        currency,
        count(*) AS credit_notes_count,
        sum(total_minor) AS credit_notes_minor
    FROM {{ ref('stg_stripe__credit_notes') }}
    WHERE is_effective = 1
    GROUP BY created_day, currency
),

refunded AS (
    SELECT
        r.created_day AS day,
        r.currency,
        count(*) AS refunds_count,
        sum(r.amount_minor) AS refunds_minor
    FROM {{ ref('stg_stripe__refunds') }} AS r
    WHERE r.is_effective = 1
        AND r.refund_id NOT IN (
            SELECT refund_id FROM {{ ref('stg_stripe__credit_note_refunds') }}
            WHERE status = 'issued' AND refund_id IS NOT NULL
        )
    GROUP BY r.created_day, r.currency
),

days AS (
    SELECT day, currency FROM invoiced
    UNION
    SELECT day, currency FROM one_off
    UNION
    SELECT day, currency FROM credited
    UNION
    SELECT day, currency FROM refunded
),

totals AS (
    SELECT
        d.day,
        d.currency,
        COALESCE(i.invoices_paid_count, 0) AS invoices_paid_count,
        CAST(COALESCE(i.invoiced_minor, 0) AS BIGINT) AS invoiced_minor,
        COALESCE(o.one_off_count, 0) AS one_off_count,
        CAST(COALESCE(o.one_off_minor, 0) AS BIGINT) AS one_off_minor,
        CAST(COALESCE(i.discounts_minor, 0) AS BIGINT) AS discounts_minor,
        COALESCE(c.credit_notes_count, 0) AS credit_notes_count,
        CAST(COALESCE(c.credit_notes_minor, 0) AS BIGINT) AS credit_notes_minor,
        COALESCE(r.refunds_count, 0) AS refunds_count,
        CAST(COALESCE(r.refunds_minor, 0) AS BIGINT) AS refunds_minor
    FROM days AS d
    LEFT JOIN invoiced AS i ON i.day = d.day AND i.currency = d.currency
    LEFT JOIN one_off AS o ON o.day = d.day AND o.currency = d.currency
    LEFT JOIN credited AS c ON c.day = d.day AND c.currency = d.currency
    LEFT JOIN refunded AS r ON r.day = d.day AND r.currency = d.currency
)

SELECT
    day,
    currency,
    invoices_paid_count,
    invoiced_minor,
    one_off_count,
    one_off_minor,
    invoiced_minor + one_off_minor AS gross_minor,
    discounts_minor,
    credit_notes_count,
    credit_notes_minor,
    refunds_count,
    refunds_minor,
    invoiced_minor + one_off_minor - discounts_minor - credit_notes_minor - refunds_minor
        AS net_minor,
    {{ to_major('invoiced_minor + one_off_minor', 'currency') }} AS gross,
    {{ to_major('discounts_minor', 'currency') }} AS discounts,
    {{ to_major('credit_notes_minor', 'currency') }} AS credit_notes,
    {{ to_major('refunds_minor', 'currency') }} AS refunds,
    {{ to_major(
        'invoiced_minor + one_off_minor - discounts_minor - credit_notes_minor - refunds_minor',
        'currency') }} AS net
FROM totals
