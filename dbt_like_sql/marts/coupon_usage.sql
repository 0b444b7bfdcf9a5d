-- config: materialized=table
-- Per coupon and subscription currency: redemptions, subscriptions it discounts, the
-- MRR of those subscriptions and the discount's monthly value, and churn of the
-- discounted subscriptions against churn of the rest (same currency). A discount
-- applies to its subscription, or, for a customer-wide discount, to every
-- subscription of the customer.
WITH subs AS (
    SELECT
        subscription_id,
        customer_id,
        currency,
        counts_toward_mrr,
        CASE WHEN churned_day IS NOT NULL THEN 1 ELSE 0 END AS churned
    FROM {{ ref('stg_stripe__subscriptions') }}
    WHERE currency IS NOT NULL
),

sub_mrr AS (
    SELECT
        subscription_id,
        sum(mrr_minor) AS mrr_minor,
        sum(unit_amount_minor * quantity) AS billed_minor
    FROM {{ ref('stg_stripe__subscription_items') }}
    GROUP BY subscription_id
),

applied AS (
    SELECT d.coupon_id, s.subscription_id, max(d.is_active) AS active_discount
    FROM {{ ref('stg_stripe__discounts') }} AS d
    INNER JOIN subs AS s
        ON s.subscription_id = d.subscription_id
        OR (d.applies_to = 'customer' AND s.customer_id = d.customer_id)
    WHERE d.coupon_id IS NOT NULL
    GROUP BY d.coupon_id, s.subscription_id
),

discounted AS (
    SELECT
        a.coupon_id,
        a.active_discount * s.counts_toward_mrr AS discounts_mrr,
        s.currency,
        s.churned,
        COALESCE(m.mrr_minor, 0) AS mrr_minor,
        m.billed_minor
    FROM applied AS a
    INNER JOIN subs AS s ON s.subscription_id = a.subscription_id
    LEFT JOIN sub_mrr AS m ON m.subscription_id = a.subscription_id
),

redemptions AS (
    SELECT coupon_id, count(*) AS redemptions_count
    FROM {{ ref('stg_stripe__discounts') }}
    GROUP BY coupon_id
),

currency_totals AS (
    SELECT currency, count(*) AS subscriptions_count, sum(churned) AS churned_count
    FROM subs
    GROUP BY currency
),

grid AS (
    SELECT
        c.coupon_id,
        c.name,
        c.percent_off,
        c.amount_off_minor,
        c.currency AS coupon_currency,
        c.duration,
        c.times_redeemed,
        c.is_deleted,
        t.currency,
        t.subscriptions_count,
        t.churned_count
    FROM {{ ref('stg_stripe__coupons') }} AS c
    CROSS JOIN currency_totals AS t
),

per_coupon AS (
    SELECT
        g.coupon_id,
        g.currency,
        count(x.coupon_id) AS discounted_subscriptions_count,
        COALESCE(sum(x.discounts_mrr), 0) AS active_discounted_subscriptions_count,
        COALESCE(sum(x.discounts_mrr * x.mrr_minor), 0) AS discounted_mrr_minor,
        COALESCE(sum(
            x.discounts_mrr * CASE
                WHEN g.percent_off IS NOT NULL THEN x.mrr_minor * g.percent_off / 100.0
                WHEN g.amount_off_minor IS NOT NULL AND g.coupon_currency = x.currency
                    AND x.billed_minor > 0
                    THEN CASE
                        WHEN g.amount_off_minor * 1.0 * x.mrr_minor / x.billed_minor < x.mrr_minor
                            THEN g.amount_off_minor * 1.0 * x.mrr_minor / x.billed_minor
                        ELSE x.mrr_minor
                    END
                ELSE 0
            END
        ), 0) AS discount_mrr_minor,
        COALESCE(sum(x.churned), 0) AS churned_discounted_count
    FROM grid AS g
    LEFT JOIN discounted AS x ON x.coupon_id = g.coupon_id AND x.currency = g.currency
    GROUP BY g.coupon_id, g.currency
)

SELECT
    g.coupon_id,
    g.currency,
    g.name AS coupon_name,
    g.percent_off,
    g.amount_off_minor,
    g.duration,
    g.is_deleted,
    g.times_redeemed,
    COALESCE(r.redemptions_count, 0) AS redemptions_count,
    p.discounted_subscriptions_count,
    p.active_discounted_subscriptions_count,
    round({{ cast_numeric('p.discounted_mrr_minor') }}, 2) AS discounted_mrr_minor,
    round({{ cast_numeric(to_major('p.discounted_mrr_minor', 'g.currency')) }}, 5)
        AS discounted_mrr,
    round({{ cast_numeric('p.discount_mrr_minor') }}, 2) AS discount_mrr_minor,
    p.churned_discounted_count,
    round({{ safe_divide('p.churned_discounted_count', 'p.discounted_subscriptions_count') }}, 4)
        AS discounted_churn_rate,
    g.subscriptions_count - p.discounted_subscriptions_count AS other_subscriptions_count,
    g.churned_count - p.churned_discounted_count AS other_churned_count,
    round(
        {{ safe_divide(
            'g.churned_count - p.churned_discounted_count',
            'g.subscriptions_count - p.discounted_subscriptions_count'
        ) }},
        4
    ) AS other_churn_rate
FROM grid AS g
INNER JOIN per_coupon AS p ON p.coupon_id = g.coupon_id AND p.currency = g.currency
LEFT JOIN redemptions AS r ON r.coupon_id = g.coupon_id
