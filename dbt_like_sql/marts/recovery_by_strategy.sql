-- config: materialized=table
-- Payment recovery (dunning) per strategy and currency.
WITH cases AS (
    SELECT
        recovery_strategy,
        currency,
        count(*) AS cases_count,
        sum(attempt_count) AS attempts_count,
        sum(is_recovered) AS recovered_count,
        sum(is_lost) AS lost_count,
        sum(CASE WHEN is_recovered = 0 AND is_lost = 0 THEN 1 ELSE 0 END) AS open_count,
        sum(CASE WHEN is_recovered = 1 THEN amount_minor ELSE 0 END) AS recovered_minor,
        sum(CASE WHEN is_lost = 1 THEN amount_minor ELSE 0 END) AS lost_minor
    FROM {{ ref('stg_pipeline__recovery_attempts') }}
    GROUP BY recovery_strategy, currency
)

SELECT
    recovery_strategy,
    currency,
    cases_count,
    CAST(attempts_count AS BIGINT) AS attempts_count,
    recovered_count,
    lost_count,
    open_count,
    {{ safe_divide('recovered_count', 'recovered_count + lost_count') }} AS recovery_rate,
    CAST(recovered_minor AS BIGINT) AS recovered_minor,
    CAST(lost_minor AS BIGINT) AS lost_minor,
    {{ to_major('recovered_minor', 'currency') }} AS recovered
FROM cases
