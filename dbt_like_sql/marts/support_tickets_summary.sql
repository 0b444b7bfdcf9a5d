-- config: materialized=table
-- Support ticket volume by type and priority, and the age of open tickets.
SELECT
    issue_type,
    priority,
    count(*) AS tickets_count,
    sum(is_open) AS open_count,
    sum(1 - is_open) AS resolved_count,
    sum(CASE WHEN {{ seconds_between('created_at', now()) }} <= 86400 THEN 1 ELSE 0 END)
        AS opened_24h_count,
    sum(occurrences) AS occurrences_count,
    max(open_age_hours) AS oldest_open_age_hours,
    avg(open_age_hours) AS avg_open_age_hours,
    avg(hours_to_resolve) AS avg_hours_to_resolve
FROM {{ ref('stg_pipeline__support_tickets') }}
GROUP BY issue_type, priority
