"""Event queue: PostgreSQL claims hold row locks, journalled per batch.

On PostgreSQL a processing batch now claims its events with ``SELECT ... FOR UPDATE
SKIP LOCKED`` inside the transaction that applies them, instead of first committing a
``processing`` status and a lease on every event row (a rewrite of each 2-3 KB row and
its indexes, twice per event). A crashed batch releases its locks when its session
ends, so its events are due again at once.

``processing_claims`` keeps one small row per in-flight batch (the event ids and the
PostgreSQL session holding them) so that a batch whose session died still counts as
one failed attempt of each of its events: an event that kills its worker every time is
escalated, as with the lease-based claim.

On PostgreSQL ``ix_stripe_events_queue`` becomes partial: only rows still in the
queue, or dead letters, so it stays small however many events are processed, and finishing an event
no longer adds an entry to it.

Revision ID: 0008_batch_claims
Revises: 0007_event_rank
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations import columns as base

revision = "0008_batch_claims"
down_revision = "0007_event_rank"
branch_labels = None
depends_on = None

BigIntPK, JSONDoc = base.BigIntPK, base.JSONDoc
QUEUE_INDEX_STATUSES = "status IN ('pending', 'retry', 'processing', 'dead_letter')"


def upgrade() -> None:
    op.create_table(
        "processing_claims",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.Column("backend_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_ids", JSONDoc, nullable=False),
        sa.Column(
            "claimed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processing_claims")),
    )
    if op.get_bind().dialect.name == "postgresql":  # SQLite keeps the full index
        _swap_queue_index(sa.text(QUEUE_INDEX_STATUSES))


def _swap_queue_index(where: sa.TextClause | None) -> None:
    """Rebuild ``ix_stripe_events_queue`` without blocking the receiver's inserts.

    ``stripe_events`` is the hot table: a plain CREATE INDEX would hold its writes for
    the whole build. Built CONCURRENTLY under a new name, swapped in, the old one
    dropped CONCURRENTLY; each outside the migration's transaction.
    """
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_stripe_events_queue_new",
            "stripe_events",
            ["status", "next_retry_at"],
            postgresql_where=where,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_stripe_events_queue", table_name="stripe_events", postgresql_concurrently=True
        )
        op.execute("ALTER INDEX ix_stripe_events_queue_new RENAME TO ix_stripe_events_queue")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _swap_queue_index(None)
    op.drop_table("processing_claims")
