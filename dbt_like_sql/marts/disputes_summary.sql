-- config: materialized=table
-- Disputes per currency: open, evidence due within 72 h, won/lost rates, amounts.
WITH disputes AS (
    SELECT
        currency,
        count(*) AS disputes_count,
        sum(is_open) AS open_count,
        sum(needs_response) AS needs_response_count,
        sum(
            CASE WHEN needs_response = 1 AND hours_until_due >= 0 AND hours_until_due <= 72
                THEN 1 ELSE 0 END
        ) AS evidence_due_72h_count,
        sum(CASE WHEN needs_response = 1 AND hours_until_due < 0 THEN 1 ELSE 0 END)
            AS evidence_overdue_count,
        sum(is_won) AS won_count,
        sum(is_lost) AS lost_count,
        sum(amount_minor) AS disputed_minor,
        sum(CASE WHEN is_open = 1 THEN amount_minor ELSE 0 END) AS open_minor,
        sum(CASE WHEN is_lost = 1 THEN amount_minor ELSE 0 END) AS lost_minor,
        sum(CASE WHEN is_won = 1 THEN amount_minor ELSE 0 END) AS won_minor
    FROM {{ ref('stg_stripe__disputes') }}
    GROUP BY currency
)

SELECT
    currency,
    disputes_count,
    open_count,
    needs_response_count,
    evidence_due_72h_count,
    evidence_overdue_count,
    won_count,
    lost_count,
    {{ safe_divide('won_count', 'won_count + lost_count') }} AS win_rate,
    {{ safe_divide('lost_count', 'won_count + lost_count') }} AS loss_rate,
    CAST(disputed_minor AS BIGINT) AS disputed_minor,
    CAST(open_minor AS BIGINT) AS open_minor,
    CAST(lost_minor AS BIGINT) AS lost_minor,
    CAST(won_minor AS BIGINT) AS won_minor,
    {{ to_major('disputed_minor', 'currency') }} AS disputed,
    {{ to_major('open_minor', 'currency') }} AS open_amount,
    {{ to_major('lost_minor', 'currency') }} AS lost
FROM disputes
