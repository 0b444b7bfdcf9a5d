"""Domain tables: lifecycle rank of the newest applied event.

Stripe's ``created`` has one-second resolution and one call often emits several
events about an object in the same second; ``last_event_rank`` (see
``stripe_pipeline/process/ordering.py``) orders those by lifecycle stage before the
arbitrary event-id tie-break.

Revision ID: 0007_event_rank
Revises: 0006_event_claim_order
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_event_rank"
down_revision = "0006_event_claim_order"
branch_labels = None
depends_on = None

DOMAIN_TABLES = (
    "stripe_payments",
    "stripe_refunds",
    "stripe_disputes",
    "stripe_customers",
    "stripe_subscriptions",
    "stripe_invoices",
    "stripe_payment_methods",
)


def upgrade() -> None:
    for table in DOMAIN_TABLES:
        op.add_column(table, sa.Column("last_event_rank", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    for table in DOMAIN_TABLES:
        op.drop_column(table, "last_event_rank")
