"""The Stripe API budget shared by every process, and resumable listings.

``stripe_rate_limits`` holds one row per rate-limit bucket (the account, and each
endpoint of it) that every process and host takes its requests from, so two Dagster
runs together stay under Stripe's limit. ``stripe_listing_slices`` records the time
slices of a parallel listing, so a run that dies resumes from its completed slices.

Revision ID: 0013_api_rate_limit
Revises: 0012_privacy
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_api_rate_limit"
down_revision = "0012_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_rate_limits",
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("tat", sa.Double(), server_default="0", nullable=False),
        sa.Column("cooldown_until", sa.Double(), server_default="0", nullable=False),
        sa.Column("priority_until", sa.Double(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_stripe_rate_limits")),
    )
    op.create_table(
        "stripe_listing_slices",
        sa.Column("run_key", sa.String(255), nullable=False),
        sa.Column("listing", sa.String(1000), nullable=False),
        sa.Column("slice_no", sa.Integer(), nullable=False),
        sa.Column("gte", sa.BigInteger(), nullable=True),
        sa.Column("lte", sa.BigInteger(), nullable=True),
        sa.Column("cursor", sa.String(255), nullable=True),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("objects", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pages", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "run_key", "listing", "slice_no", name=op.f("pk_stripe_listing_slices")
        ),
    )


def downgrade() -> None:
    op.drop_table("stripe_listing_slices")
    op.drop_table("stripe_rate_limits")
