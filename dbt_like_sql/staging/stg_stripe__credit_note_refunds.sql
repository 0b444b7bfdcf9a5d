-- config: materialized=view
-- Refunds made through a credit note: one row per refund the note names.
SELECT
    n.stripe_credit_note_id AS credit_note_id,
    {{ json_scalar('r.value') }} AS refund_id,
    n.status
FROM {{ source('stripe_credit_notes') }} AS n
CROSS JOIN {{ json_each('n.refund_ids', 'r') }}
