-- config: materialized=view
SELECT
    pc.stripe_promotion_code_id AS promotion_code_id,
    pc.code,
    pc.coupon_id,
    pc.customer_id,
    pc.active,
    pc.max_redemptions,
    COALESCE(pc.times_redeemed, 0) AS times_redeemed,
    pc.expires_at
FROM {{ source('stripe_promotion_codes') }} AS pc
