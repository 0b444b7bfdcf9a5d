-- config: materialized=view
SELECT
    d.stripe_dispute_id AS dispute_id,
    d.payment_intent_id,
    d.charge_id,
    d.amount_minor,
    lower(d.currency) AS currency,
    d.status,
    d.reason,
    d.due_by,
    d.has_evidence,
    d.funds_withdrawn_minor,
    d.funds_reinstated_minor,
    COALESCE(
        {{ epoch_to_date('d.stripe_created') }}, {{ date_trunc('day', 'd.created_at') }}
    ) AS created_day,
    CASE
        WHEN d.status IN (
            'needs_response', 'under_review', 'warning_needs_response', 'warning_under_review'
        ) THEN 1 ELSE 0
    END AS is_open,
    CASE WHEN d.status IN ('needs_response', 'warning_needs_response') THEN 1 ELSE 0 END
        AS needs_response,
    CASE WHEN d.status = 'won' THEN 1 ELSE 0 END AS is_won,
    CASE WHEN d.status = 'lost' THEN 1 ELSE 0 END AS is_lost,
    {{ seconds_between(now(), 'd.due_by') }} / 3600.0 AS hours_until_due
FROM {{ source('stripe_disputes') }} AS d
