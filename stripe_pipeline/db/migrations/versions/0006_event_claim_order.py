"""Event queue: a partial index in claim order.

Claims take the oldest due events first (``ORDER BY stripe_created, id``). Without an
index in that order every claim sorts every queued row; with this partial index (only
``pending``, ``retry`` and ``processing`` rows, so it stays small however many events
are processed) a claim reads just the rows it takes.

Revision ID: 0006_event_claim_order
Revises: 0005_reconciliation
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_event_claim_order"
down_revision = "0005_reconciliation"
branch_labels = None
depends_on = None

QUEUED = "status IN ('pending', 'retry', 'processing')"


def upgrade() -> None:
    op.create_index(
        "ix_stripe_events_claim_order",
        "stripe_events",
        ["stripe_created", "id"],
        unique=False,
        postgresql_where=sa.text(QUEUED),
        sqlite_where=sa.text(QUEUED),
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_events_claim_order", table_name="stripe_events")
