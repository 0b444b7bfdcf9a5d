"""Reconciled state: deleted draft invoices, objects left as a guess.

- ``stripe_invoices.deleted_at``: ``invoice.deleted`` marks a deleted draft (Stripe
  answers 404 for it afterwards) instead of leaving it a draft forever.
- ``stale_objects``: objects whose stored state is a guess (two events of one second
  that their lifecycle cannot order said different things), fetched by id and
  repaired by reconciliation.

Revision ID: 0009_reconciled_state
Revises: 0008_batch_claims
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations import columns as base

revision = "0009_reconciled_state"
down_revision = "0008_batch_claims"
branch_labels = None
depends_on = None

BigIntPK = base.BigIntPK


def upgrade() -> None:
    op.add_column("stripe_invoices", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    op.create_table(
        "stale_objects",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stale_objects")),
    )
    op.create_index(
        "uq_stale_objects_object", "stale_objects", ["object_type", "object_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_stale_objects_object", table_name="stale_objects")
    op.drop_table("stale_objects")
    op.drop_column("stripe_invoices", "deleted_at")
