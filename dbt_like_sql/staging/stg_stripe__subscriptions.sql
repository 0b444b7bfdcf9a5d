-- config: materialized=view
SELECT
    s.stripe_subscription_id AS subscription_id,
    s.customer_id,
    s.status,
    lower(COALESCE(s.currency, {{ json_get('s.items', 0, 'currency') }})) AS currency,
    s.stripe_created,
    COALESCE(
        {{ epoch_to_date('s.stripe_created') }}, {{ date_trunc('day', 's.created_at') }}
    ) AS created_day,
    s.trial_end,
    s.cancel_at_period_end,
    COALESCE(s.ended_at, s.canceled_at) AS churned_at,
    CASE
        WHEN s.status = 'canceled' OR s.ended_at IS NOT NULL
            THEN {{ date_trunc('day', 'COALESCE(s.ended_at, s.canceled_at)') }}
    END AS churned_day,
    CASE WHEN s.status IN ('active', 'past_due') THEN 1 ELSE 0 END AS counts_toward_mrr,
    CASE WHEN s.status = 'trialing' THEN {{ seconds_between(now(), 's.trial_end') }} / 3600.0
    END AS hours_until_trial_end
FROM {{ source('stripe_subscriptions') }} AS s
