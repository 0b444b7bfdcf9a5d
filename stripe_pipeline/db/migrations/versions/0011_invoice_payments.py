"""Invoice payments: the invoice <-> payment link of API 2025-03-31.basil.

Since basil an invoice no longer names its PaymentIntent or charge, and a
PaymentIntent no longer names its invoice; InvoicePayment objects hold the link.
``stripe_invoice_payments`` stores them (events, listings, lookups), and processing
fills ``stripe_invoices.payment_intent_id`` / ``charge_id`` and
``stripe_payments.invoice_id`` from them.

Revision ID: 0011_invoice_payments
Revises: 0010_hostile_input
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations import columns as base

revision = "0011_invoice_payments"
down_revision = "0010_hostile_input"
branch_labels = None
depends_on = None

TABLE = "stripe_invoice_payments"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", base.BigIntPK, autoincrement=True, nullable=False),
        sa.Column("stripe_invoice_payment_id", sa.String(255), nullable=False),
        sa.Column("invoice_id", sa.String(255), nullable=False),
        sa.Column("payment_type", sa.String(32), nullable=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=True),
        sa.Column("amount_requested_minor", sa.BigInteger(), nullable=True),
        sa.Column("amount_paid_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        base.amount_column("amount_requested_minor"),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("canceled_at", TS, nullable=True),
        *base.version_columns(),
        sa.Column("last_event_rank", sa.SmallInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        sa.UniqueConstraint(
            "stripe_invoice_payment_id", name=op.f(f"uq_{TABLE}_stripe_invoice_payment_id")
        ),
    )
    op.create_index(f"ix_{TABLE}_invoice_id", TABLE, ["invoice_id"])
    op.create_index(f"ix_{TABLE}_payment_intent_id", TABLE, ["payment_intent_id"])
    op.create_index(f"ix_{TABLE}_charge_id", TABLE, ["charge_id"])


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_charge_id", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_payment_intent_id", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_invoice_id", table_name=TABLE)
    op.drop_table(TABLE)
