"""Dead letters know their support ticket; audit actors fit every accepted event id.

``stripe_events.support_ticket_id``:

Tickets are grouped by cause (one per issue and object, or per issue and root-cause
fingerprint), so a ticket can stand for thousands of events while it lists only the
latest ids. The column links every dead-lettered event to its ticket, so AutoRetry
re-queues all of them and ``tickets show`` counts them. Nullable, no default: on
PostgreSQL adding it rewrites nothing; its partial index (only linked events) is
built CONCURRENTLY, since the receiver keeps landing into ``stripe_events``.

``audit_log.actor`` becomes ``VARCHAR(512)``: the receiver accepts event ids of up to
255 characters and processing writes ``event:<id>`` as the actor, which overflowed
``VARCHAR(255)`` and dead-lettered a valid event. On PostgreSQL widening a
``VARCHAR`` rewrites nothing; SQLite copies the table (Alembic's batch mode) and its
append-only triggers are created again.

Revision ID: 0010_hostile_input
Revises: 0009_reconciled_state
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_hostile_input"
down_revision = "0009_reconciled_state"
branch_labels = None
depends_on = None

LINKED = "support_ticket_id IS NOT NULL"
INDEX = "ix_stripe_events_support_ticket_id"


def upgrade() -> None:
    _actor_length(512)
    op.add_column("stripe_events", sa.Column("support_ticket_id", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX,
                "stripe_events",
                ["support_ticket_id"],
                postgresql_where=sa.text(LINKED),
                postgresql_concurrently=True,
            )
    else:
        op.create_index(INDEX, "stripe_events", ["support_ticket_id"], sqlite_where=sa.text(LINKED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="stripe_events", postgresql_concurrently=True)
    else:
        op.drop_index(INDEX, table_name="stripe_events")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_column("support_ticket_id")
    _actor_length(255)


def _actor_length(length: int) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE audit_log ALTER COLUMN actor TYPE VARCHAR({length}) "
            f"USING left(actor, {length})"
        )
        return
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("actor", type_=sa.String(length), existing_nullable=False)
    # the copy dropped the triggers with the old table
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_log_no_{operation.lower()} BEFORE {operation} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {operation} refused'); END"
        )
