"""The architecture plan's schema enhancements.

New tables ``stripe_refunds``, ``stripe_disputes`` and ``payment_support_tickets``;
retry columns on ``stripe_events``; strategy and ticket link on
``payment_recovery_attempts``. Amounts are minor units plus currency, with the
plan's decimal ``amount`` generated from them.

Revision ID: 0002_plan_enhancements
Revises: 0001_base
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations import columns as base

revision = "0002_plan_enhancements"
down_revision = "0001_base"
branch_labels = None
depends_on = None

BigIntPK, JSONDoc = base.BigIntPK, base.JSONDoc
TICKET_FK = "fk_recovery_attempts_support_ticket"


def upgrade() -> None:
    op.create_table(
        "payment_support_tickets",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("issue_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), server_default="open", nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("dedupe_key", sa.String(512), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("details", JSONDoc, nullable=True),
        sa.Column("occurrences", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("resolution", sa.String(32), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
        *base.timestamps(),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_support_tickets")),
    )
    op.create_index(
        "ix_payment_support_tickets_status_priority",
        "payment_support_tickets",
        ["status", "priority"],
    )
    op.create_index(
        "uq_payment_support_tickets_open_dedupe",
        "payment_support_tickets",
        ["dedupe_key"],
        unique=True,
        postgresql_where=sa.text("status <> 'resolved'"),
        sqlite_where=sa.text("status <> 'resolved'"),
    )

    op.create_table(
        "stripe_refunds",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("stripe_refund_id", sa.String(255), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=False),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        base.amount_column(),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("failure_reason", sa.String(255), nullable=True),
        *base.version_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_refunds")),
        sa.UniqueConstraint("stripe_refund_id", name=op.f("uq_stripe_refunds_stripe_refund_id")),
    )
    op.create_index("ix_stripe_refunds_payment_intent_id", "stripe_refunds", ["payment_intent_id"])

    op.create_table(
        "stripe_disputes",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("stripe_dispute_id", sa.String(255), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=False),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        base.amount_column(),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("evidence", JSONDoc, nullable=True),
        sa.Column("due_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("has_evidence", sa.Boolean(), nullable=True),
        sa.Column("is_charge_refundable", sa.Boolean(), nullable=True),
        sa.Column(
            "funds_withdrawn_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "funds_reinstated_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        *base.version_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_disputes")),
        sa.UniqueConstraint("stripe_dispute_id", name=op.f("uq_stripe_disputes_stripe_dispute_id")),
    )
    op.create_index(
        "ix_stripe_disputes_payment_intent_id", "stripe_disputes", ["payment_intent_id"]
    )
    op.create_index("ix_stripe_disputes_status_due_by", "stripe_disputes", ["status", "due_by"])

    op.add_column(
        "stripe_events",
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("stripe_events", sa.Column("next_retry_at", sa.DateTime(timezone=True)))
    op.add_column("stripe_events", sa.Column("error_context", JSONDoc, nullable=True))
    op.create_index("ix_stripe_events_queue", "stripe_events", ["status", "next_retry_at"])

    op.add_column("payment_recovery_attempts", sa.Column("recovery_strategy", sa.String(64)))
    op.add_column("payment_recovery_attempts", sa.Column("last_error_type", sa.String(64)))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a foreign key only inline; a batch copy would choke on the
        # generated ``amount`` column, so no table rebuild here.
        op.execute(
            f"ALTER TABLE payment_recovery_attempts ADD COLUMN support_ticket_id BIGINT "
            f"CONSTRAINT {TICKET_FK} REFERENCES payment_support_tickets (id)"
        )
    else:
        op.add_column("payment_recovery_attempts", sa.Column("support_ticket_id", sa.BigInteger()))
        op.create_foreign_key(
            TICKET_FK,
            "payment_recovery_attempts",
            "payment_support_tickets",
            ["support_ticket_id"],
            ["id"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(TICKET_FK, "payment_recovery_attempts", type_="foreignkey")
    for column in ("support_ticket_id", "last_error_type", "recovery_strategy"):
        op.drop_column("payment_recovery_attempts", column)
    op.drop_index("ix_stripe_events_queue", table_name="stripe_events")
    for column in ("error_context", "next_retry_at", "retry_count"):
        op.drop_column("stripe_events", column)
    op.drop_table("stripe_disputes")
    op.drop_table("stripe_refunds")
    op.drop_table("payment_support_tickets")
