-- config: materialized=table
-- MRR and active subscriptions per currency, product and price. Items come from
-- stg_stripe__subscription_items (intervals normalised to a month, times quantity);
-- the product is the item's, else its price's; names come from the product and
-- price tables (processing stores a price or product a subscription names).
WITH items AS (
    SELECT
        i.subscription_id,
        i.currency,
        COALESCE(i.product_id, p.product_id) AS product_id,
        i.price_id,
        p.nickname AS price_nickname,
        i.billing_interval,
        i.interval_count,
        i.quantity,
        i.mrr_minor
    FROM {{ ref('stg_stripe__subscription_items') }} AS i
    LEFT JOIN {{ ref('stg_stripe__prices') }} AS p ON p.price_id = i.price_id
    WHERE i.counts_toward_mrr = 1
),

per_price AS (
    SELECT
        currency,
        product_id,
        price_id,
        price_nickname,
        billing_interval,
        interval_count,
        count(DISTINCT subscription_id) AS active_subscriptions_count,
        sum(quantity) AS quantity,
        sum(mrr_minor) AS mrr_minor
    FROM items
    GROUP BY currency, product_id, price_id, price_nickname, billing_interval, interval_count
)

SELECT
    pp.currency,
    pp.product_id,
    pr.name AS product_name,
    pp.price_id,
    pp.price_nickname,
    pp.billing_interval,
    pp.interval_count,
    pp.active_subscriptions_count,
    pp.quantity,
    round({{ cast_numeric('pp.mrr_minor') }}, 2) AS mrr_minor,
    round({{ cast_numeric(to_major('pp.mrr_minor', 'pp.currency')) }}, 5) AS mrr
FROM per_price AS pp
LEFT JOIN {{ ref('stg_stripe__products') }} AS pr ON pr.product_id = pp.product_id
