"""Base schema: the tables the architecture plan assumes already exist.

``stripe_events`` (raw webhook events), ``payment_recovery_attempts`` (dunning) and
``stripe_payments`` (the payment records table).

Revision ID: 0001_base
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import (
    BigIntPK,
    JSONDoc,
    amount_column,
    timestamps,
    version_columns,
)

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("stripe_event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("livemode", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("account", sa.String(255), nullable=True),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("stripe_created", sa.BigInteger(), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("payload", JSONDoc, nullable=False),
        sa.Column("status", sa.String(32), server_default="pending", nullable=False),
        sa.Column("source", sa.String(32), server_default="webhook", nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
        sa.UniqueConstraint("stripe_event_id", name=op.f("uq_stripe_events_stripe_event_id")),
    )
    op.create_index("ix_stripe_events_object", "stripe_events", ["object_id", "stripe_created"])
    op.create_index(
        "ix_stripe_events_type_created", "stripe_events", ["event_type", "stripe_created"]
    )

    op.create_table(
        "payment_recovery_attempts",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("invoice_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("payment_method_id", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), server_default="open", nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failure_code", sa.String(255), nullable=True),
        sa.Column("decline_code", sa.String(255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        amount_column(),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_recovery_attempts")),
    )
    op.create_index(
        "ix_payment_recovery_attempts_due",
        "payment_recovery_attempts",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_payment_recovery_attempts_invoice_id", "payment_recovery_attempts", ["invoice_id"]
    )
    op.create_index(
        "ix_payment_recovery_attempts_payment_intent_id",
        "payment_recovery_attempts",
        ["payment_intent_id"],
    )

    op.create_table(
        "stripe_payments",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=False),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("invoice_id", sa.String(255), nullable=True),
        sa.Column("payment_method_id", sa.String(255), nullable=True),
        sa.Column("card_fingerprint", sa.String(255), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("amount_received_minor", sa.BigInteger(), nullable=True),
        sa.Column(
            "amount_refunded_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("currency", sa.String(3), nullable=True),
        amount_column(),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("failure_code", sa.String(255), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("decline_code", sa.String(255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        *version_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_payments")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_stripe_payments_payment_intent_id")),
    )
    op.create_index("ix_stripe_payments_charge_id", "stripe_payments", ["charge_id"])
    op.create_index("ix_stripe_payments_customer_id", "stripe_payments", ["customer_id"])


def downgrade() -> None:
    op.drop_table("stripe_payments")
    op.drop_table("payment_recovery_attempts")
    op.drop_table("stripe_events")
