-- config: materialized=table
SELECT
    created_day AS day,
    issue_type,
    priority,
    count(*) AS opened_count,
    sum(is_open) AS still_open_count
FROM {{ ref('stg_pipeline__support_tickets') }}
GROUP BY created_day, issue_type, priority
