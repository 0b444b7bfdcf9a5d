-- config: materialized=view
SELECT
    r.stripe_tax_rate_id AS tax_rate_id,
    r.display_name,
    r.description,
    {{ cast_numeric('r.percentage') }} AS percentage,
    CASE WHEN r.inclusive THEN 1 ELSE 0 END AS is_inclusive,
    CASE WHEN r.active THEN 1 ELSE 0 END AS is_active,
    r.country,
    r.state,
    r.jurisdiction,
    r.jurisdiction_level,
    r.tax_type
FROM {{ source('stripe_tax_rates') }} AS r
