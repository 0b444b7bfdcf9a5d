-- config: materialized=table
-- Subscription state per currency: counts by status, MRR, new and churned in the
-- last 30 days, trials ending within 3 days.
WITH item_mrr AS (
    SELECT subscription_id, sum(mrr_minor) AS mrr_minor
    FROM {{ ref('stg_stripe__subscription_items') }}
    WHERE counts_toward_mrr = 1
    GROUP BY subscription_id
),

subscriptions AS (
    SELECT
        s.*,
        m.mrr_minor,
        {{ seconds_between('s.churned_at', now()) }} / 86400.0 AS days_since_churn
    FROM {{ ref('stg_stripe__subscriptions') }} AS s
    LEFT JOIN item_mrr AS m ON m.subscription_id = s.subscription_id
),

per_currency AS (
    SELECT
        currency,
        count(*) AS subscriptions_count,
        sum(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS active_count,
        sum(CASE WHEN status = 'trialing' THEN 1 ELSE 0 END) AS trialing_count,
        sum(CASE WHEN status = 'past_due' THEN 1 ELSE 0 END) AS past_due_count,
        sum(CASE WHEN status = 'canceled' THEN 1 ELSE 0 END) AS canceled_count,
        sum(
            CASE WHEN hours_until_trial_end >= 0 AND hours_until_trial_end <= 72 THEN 1 ELSE 0 END
        ) AS trials_ending_3d_count,
        sum(
            CASE WHEN stripe_created >= {{ epoch_seconds(now()) }} - 30 * 86400
                THEN 1 ELSE 0 END
        ) AS new_30d_count,
        sum(
            CASE WHEN churned_day IS NOT NULL AND days_since_churn <= 30 THEN 1 ELSE 0 END
        ) AS churned_30d_count,
        sum(COALESCE(mrr_minor, 0)) AS mrr_minor
    FROM subscriptions
    GROUP BY currency
)

SELECT
    currency,
    subscriptions_count,
    active_count,
    trialing_count,
    past_due_count,
    canceled_count,
    trials_ending_3d_count,
    new_30d_count,
    churned_30d_count,
    round({{ cast_numeric('mrr_minor') }}, 2) AS mrr_minor,
    round({{ cast_numeric(to_major('mrr_minor', 'currency')) }}, 5) AS mrr
FROM per_currency
