"""Billing, tax, checkout and fraud objects (issue 17, second half).

New domain tables, each built from Stripe events and reconciled nightly like the
others (``stripe_pipeline/catalog``): invoice line items and invoice totals (with the
tax amounts per rate), credit notes and their lines, tax rates, checkout sessions,
setup intents, Radar early fraud warnings and reviews. New tables only: nothing
existing is rewritten.

Revision ID: 0015_billing
Revises: 0014_commerce
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, JSONDoc, version_columns

revision = "0015_billing"
down_revision = "0014_commerce"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _s(name: str, length: int = 255, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _big(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=True)


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


TABLES = (
    "stripe_invoice_line_items",
    "stripe_invoice_totals",
    "stripe_credit_notes",
    "stripe_credit_note_line_items",
    "stripe_tax_rates",
    "stripe_checkout_sessions",
    "stripe_setup_intents",
    "stripe_early_fraud_warnings",
    "stripe_reviews",
)
INDEXES = (
    ("ix_stripe_invoice_line_items_invoice_id", "stripe_invoice_line_items", "invoice_id"),
    ("ix_stripe_credit_notes_invoice_id", "stripe_credit_notes", "invoice_id"),
    (
        "ix_stripe_credit_note_line_items_credit_note_id",
        "stripe_credit_note_line_items",
        "credit_note_id",
    ),
    ("ix_stripe_early_fraud_warnings_charge_id", "stripe_early_fraud_warnings", "charge_id"),
    ("ix_stripe_reviews_charge_id", "stripe_reviews", "charge_id"),
)


def upgrade() -> None:
    _keyed_table(
        "stripe_invoice_line_items",
        "stripe_line_item_id",
        _s("invoice_id", nullable=False),
        _s("type", 32),
        _s("subscription_id"),
        _s("subscription_item_id"),
        _s("invoice_item_id"),
        _s("price_id"),
        _s("product_id"),
        _s("currency", 3),
        _big("amount_minor"),
        _big("quantity"),
        sa.Column("period_start", TS, nullable=True),
        sa.Column("period_end", TS, nullable=True),
        sa.Column("proration", sa.Boolean(), nullable=True),
        _big("discount_minor"),
        _big("tax_minor"),
        sa.Column("taxes", JSONDoc, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_invoice_totals",
        "stripe_invoice_id",
        _s("currency", 3),
        _big("subtotal_minor"),
        _big("total_minor"),
        _big("discount_minor"),
        _big("tax_minor"),
        sa.Column("taxes", JSONDoc, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_credit_notes",
        "stripe_credit_note_id",
        _s("invoice_id"),
        _s("customer_id"),
        _s("status", 32, nullable=False),
        _s("type", 32),
        _s("reason", 64),
        _s("currency", 3),
        _big("amount_minor"),
        _big("subtotal_minor"),
        _big("total_minor"),
        _big("discount_minor"),
        _big("tax_minor"),
        sa.Column("taxes", JSONDoc, nullable=True),
        _big("out_of_band_minor"),
        sa.Column("refund_ids", JSONDoc, nullable=True),
        sa.Column("voided_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_credit_note_line_items",
        "stripe_credit_note_line_item_id",
        _s("credit_note_id", nullable=False),
        _s("invoice_line_item_id"),
        _s("type", 64),
        _big("amount_minor"),
        _big("quantity"),
        _big("unit_amount_minor"),
        _big("discount_minor"),
        _big("tax_minor"),
        sa.Column("taxes", JSONDoc, nullable=True),
    )
    _keyed_table(
        "stripe_tax_rates",
        "stripe_tax_rate_id",
        _s("display_name"),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("percentage", sa.Double(), nullable=True),
        sa.Column("inclusive", sa.Boolean(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        _s("country", 64),
        _s("state", 64),
        _s("jurisdiction"),
        _s("jurisdiction_level", 32),
        _s("tax_type", 64),
    )
    _keyed_table(
        "stripe_checkout_sessions",
        "stripe_checkout_session_id",
        _s("status", 32, nullable=False),
        _s("payment_status", 32),
        _s("mode", 32),
        _s("currency", 3),
        _big("amount_subtotal_minor"),
        _big("amount_total_minor"),
        _s("customer_id"),
        _s("customer_email", 512),
        _s("customer_name", 512),
        _s("payment_intent_id"),
        _s("subscription_id"),
        _s("setup_intent_id"),
        _s("invoice_id"),
        _s("payment_link_id"),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("expired_at", TS, nullable=True),
    )
    _keyed_table(
        "stripe_setup_intents",
        "stripe_setup_intent_id",
        _s("status", 64, nullable=False),
        _s("customer_id"),
        _s("payment_method_id"),
        _s("usage", 32),
        _s("cancellation_reason", 64),
        _s("last_error_code"),
        _s("last_error_decline_code"),
    )
    _keyed_table(
        "stripe_early_fraud_warnings",
        "stripe_early_fraud_warning_id",
        _s("charge_id"),
        _s("payment_intent_id"),
        _s("fraud_type", 64),
        sa.Column("actionable", sa.Boolean(), nullable=True),
    )
    _keyed_table(
        "stripe_reviews",
        "stripe_review_id",
        _s("charge_id"),
        _s("payment_intent_id"),
        sa.Column("open", sa.Boolean(), nullable=True),
        _s("reason", 64),
        _s("opened_reason", 64),
        _s("closed_reason", 64),
        sa.Column("closed_at", TS, nullable=True),
    )
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
