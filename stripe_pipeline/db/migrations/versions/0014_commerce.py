"""Commerce objects: products, prices (and legacy plans), coupons, promotion codes,
discounts.

Five new domain tables, each with the newest-event-wins guard of the others. Legacy
plans land in ``stripe_prices``: Stripe's prices API returns a plan as a price with
the same id, so one row per id serves both (``plan.*`` events and ``/v1/prices``).
Discounts are keyed by their ``di_...`` id; discounts of old API versions have none
and get a derived ``di_legacy_...`` key (see ``catalog/discounts.py``). New tables
only: nothing existing is rewritten.

Revision ID: 0014_commerce
Revises: 0013_api_rate_limit
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, amount_column, version_columns

revision = "0014_commerce"
down_revision = "0013_api_rate_limit"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _keyed_table(name: str, key: str, *columns: sa.Column) -> None:
    """A domain table: surrogate id, unique Stripe id, columns, ordering guard."""
    op.create_table(
        name,
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column(key, sa.String(255), nullable=False),
        *columns,
        *version_columns(),
        sa.Column("last_event_rank", sa.SmallInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint(key, name=op.f(f"uq_{name}_{key}")),
    )


def upgrade() -> None:
    _keyed_table(
        "stripe_products",
        "stripe_product_id",
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("type", sa.String(32), nullable=True),
        sa.Column("default_price_id", sa.String(255), nullable=True),
        sa.Column("unit_label", sa.String(255), nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_prices",
        "stripe_price_id",
        sa.Column("product_id", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("unit_amount_minor", sa.BigInteger(), nullable=True),
        amount_column("unit_amount_minor"),
        sa.Column("unit_amount_decimal", sa.String(64), nullable=True),
        sa.Column("billing_scheme", sa.String(32), nullable=True),
        sa.Column("type", sa.String(32), nullable=True),
        sa.Column("recurring_interval", sa.String(16), nullable=True),
        sa.Column("recurring_interval_count", sa.Integer(), nullable=True),
        sa.Column("recurring_usage_type", sa.String(32), nullable=True),
        sa.Column("nickname", sa.Text(), nullable=True),
        sa.Column("lookup_key", sa.String(255), nullable=True),
        sa.Column("tax_behavior", sa.String(32), nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    op.create_index("ix_stripe_prices_product_id", "stripe_prices", ["product_id"])
    _keyed_table(
        "stripe_coupons",
        "stripe_coupon_id",
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("percent_off", sa.Double(), nullable=True),
        sa.Column("amount_off_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("duration", sa.String(16), nullable=True),
        sa.Column("duration_in_months", sa.Integer(), nullable=True),
        sa.Column("max_redemptions", sa.BigInteger(), nullable=True),
        sa.Column("times_redeemed", sa.BigInteger(), nullable=True),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("redeem_by", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_promotion_codes",
        "stripe_promotion_code_id",
        sa.Column("code", sa.String(255), nullable=True),
        sa.Column("coupon_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("max_redemptions", sa.BigInteger(), nullable=True),
        sa.Column("times_redeemed", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
    )
    op.create_index("ix_stripe_promotion_codes_coupon_id", "stripe_promotion_codes", ["coupon_id"])
    _keyed_table(
        "stripe_discounts",
        "stripe_discount_id",
        sa.Column("coupon_id", sa.String(255), nullable=True),
        sa.Column("promotion_code_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("subscription_item_id", sa.String(255), nullable=True),
        sa.Column("invoice_id", sa.String(255), nullable=True),
        sa.Column("invoice_item_id", sa.String(255), nullable=True),
        sa.Column("start_at", TS, nullable=True),
        sa.Column("end_at", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    op.create_index("ix_stripe_discounts_coupon_id", "stripe_discounts", ["coupon_id"])
    op.create_index("ix_stripe_discounts_subscription_id", "stripe_discounts", ["subscription_id"])
    op.create_index("ix_stripe_discounts_customer_id", "stripe_discounts", ["customer_id"])


def downgrade() -> None:
    for table in (
        "stripe_discounts",
        "stripe_promotion_codes",
        "stripe_coupons",
        "stripe_prices",
        "stripe_products",
    ):
        op.drop_table(table)
