-- config: materialized=view
SELECT
    c.stripe_coupon_id AS coupon_id,
    c.name,
    c.percent_off,
    c.amount_off_minor,
    lower(c.currency) AS currency,
    c.duration,
    c.duration_in_months,
    c.max_redemptions,
    COALESCE(c.times_redeemed, 0) AS times_redeemed,
    c.valid,
    c.redeem_by,
    CASE WHEN c.deleted_at IS NOT NULL THEN 1 ELSE 0 END AS is_deleted
FROM {{ source('stripe_coupons') }} AS c
