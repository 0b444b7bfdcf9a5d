"""Payment recovery: live-recovery key, payment-attempt ledger, fraud rule hits.

``payment_recovery_attempts`` gains ``recovery_key`` (one live recovery per payment or
invoice, a partial unique index) and ``closed_at``. ``payment_attempts`` is the
ledger the per-card and per-customer attempt limits are counted from, shared by every
run and process. ``fraud_rule_hits`` keeps each fraud rule firing once per window.

Revision ID: 0004_recovery
Revises: 0003_domain_tables
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, JSONDoc

revision = "0004_recovery"
down_revision = "0003_domain_tables"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
LIVE = "status NOT IN ('recovered', 'canceled')"


def upgrade() -> None:
    op.add_column(
        "payment_recovery_attempts", sa.Column("recovery_key", sa.String(255), nullable=True)
    )
    op.add_column("payment_recovery_attempts", sa.Column("closed_at", TS, nullable=True))
    op.create_index(
        "uq_payment_recovery_attempts_live_key",
        "payment_recovery_attempts",
        ["recovery_key"],
        unique=True,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )

    op.create_table(
        "payment_attempts",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("card_key", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("recovery_id", sa.BigInteger(), nullable=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("invoice_id", sa.String(255), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("attempted_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["recovery_id"],
            ["payment_recovery_attempts.id"],
            name="fk_payment_attempts_recovery",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempts")),
    )
    op.create_index(
        "ix_payment_attempts_card_window",
        "payment_attempts",
        ["card_key", "decision", "attempted_at"],
    )
    op.create_index(
        "ix_payment_attempts_customer_window",
        "payment_attempts",
        ["customer_id", "decision", "attempted_at"],
    )
    op.create_index("ix_payment_attempts_recovery_id", "payment_attempts", ["recovery_id"])

    op.create_table(
        "fraud_rule_hits",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("dedupe_key", sa.String(512), nullable=False),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("observed", sa.Integer(), nullable=True),
        sa.Column("threshold", sa.Integer(), nullable=True),
        sa.Column("details", JSONDoc, nullable=True),
        sa.Column("support_ticket_id", sa.BigInteger(), nullable=True),
        sa.Column("detected_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["support_ticket_id"],
            ["payment_support_tickets.id"],
            name="fk_fraud_rule_hits_support_ticket",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_rule_hits")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_fraud_rule_hits_dedupe_key")),
    )
    op.create_index("ix_fraud_rule_hits_customer_id", "fraud_rule_hits", ["customer_id"])


def downgrade() -> None:
    op.drop_table("fraud_rule_hits")
    op.drop_table("payment_attempts")
    op.drop_index("uq_payment_recovery_attempts_live_key", "payment_recovery_attempts")
    for column in ("closed_at", "recovery_key"):
        op.drop_column("payment_recovery_attempts", column)
