-- config: materialized=table
-- Checkout sessions per UTC day and mode: opened, completed, expired, and how many of
-- the day's sessions converted.
WITH opened AS (
    SELECT
        created_day AS day,
        mode,
        count(*) AS opened_count,
        sum(is_complete) AS converted_count,
        sum(is_open) AS still_open_count
    FROM {{ ref('stg_stripe__checkout_sessions') }}
    GROUP BY created_day, mode
),

completed AS (
    SELECT completed_day AS day, mode, count(*) AS completed_count
    FROM {{ ref('stg_stripe__checkout_sessions') }}
    WHERE completed_day IS NOT NULL
    GROUP BY completed_day, mode
),

expired AS (
    SELECT expired_day AS day, mode, count(*) AS expired_count
    FROM {{ ref('stg_stripe__checkout_sessions') }}
    WHERE expired_day IS NOT NULL
    GROUP BY expired_day, mode
),

days AS (
    SELECT day, mode FROM opened
    UNION
    SELECT day, mode FROM completed
    UNION
    SELECT day, mode FROM expired
)

SELECT
    d.day,
    d.mode,
    COALESCE(o.opened_count, 0) AS opened_count,
    COALESCE(c.completed_count, 0) AS completed_count,
    COALESCE(x.expired_count, 0) AS expired_count,
    COALESCE(o.converted_count, 0) AS converted_count,
    COALESCE(o.still_open_count, 0) AS still_open_count,
    {{ safe_divide('o.converted_count', 'o.opened_count') }} AS conversion_rate
FROM days AS d
LEFT JOIN opened AS o ON o.day = d.day AND o.mode = d.mode
LEFT JOIN completed AS c ON c.day = d.day AND c.mode = d.mode
LEFT JOIN expired AS x ON x.day = d.day AND x.mode = d.mode
