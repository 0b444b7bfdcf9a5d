-- config: materialized=view
SELECT
    t.id AS ticket_id,
    t.issue_type,
    t.priority,
    t.status,
    t.occurrences,
    t.resolution,
    t.created_at,
    t.resolved_at,
    {{ date_trunc('day', 't.created_at') }} AS created_day,
    CASE WHEN t.status <> 'resolved' THEN 1 ELSE 0 END AS is_open,
    CASE
        WHEN t.status <> 'resolved' THEN {{ seconds_between('t.created_at', now()) }} / 3600.0
    END AS open_age_hours,
    CASE
        WHEN t.resolved_at IS NOT NULL
            THEN {{ seconds_between('t.created_at', 't.resolved_at') }} / 3600.0
    END AS hours_to_resolve
FROM {{ source('payment_support_tickets') }} AS t
