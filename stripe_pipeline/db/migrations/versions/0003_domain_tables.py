"""Receiver delivery audit, domain tables, append-only audit log, claim leases.

Revision ID: 0003_domain_tables
Revises: 0002_plan_enhancements
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, JSONDoc, amount_column, version_columns

revision = "0003_domain_tables"
down_revision = "0002_plan_enhancements"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", BigIntPK, autoincrement=True, nullable=False)


def _keyed_table(name: str, key: str, *columns: sa.Column) -> None:
    """A domain table: surrogate id, unique Stripe id, columns, ordering guard."""
    op.create_table(
        name,
        _id(),
        sa.Column(key, sa.String(255), nullable=False),
        *columns,
        *version_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint(key, name=op.f(f"uq_{name}_{key}")),
    )


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        _id(),
        sa.Column("received_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("event_type", sa.String(255), nullable=True),
        sa.Column("body_bytes", sa.Integer(), nullable=True),
        sa.Column("repeat_count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])

    _keyed_table(
        "stripe_customers",
        "stripe_customer_id",
        sa.Column("email", sa.String(512), nullable=True),
        sa.Column("name", sa.String(512), nullable=True),
        sa.Column("default_payment_method_id", sa.String(255), nullable=True),
        sa.Column("delinquent", sa.Boolean(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("fraud_flagged_at", TS, nullable=True),
        sa.Column("fraud_reason", sa.String(255), nullable=True),
    )

    _keyed_table(
        "stripe_subscriptions",
        "stripe_subscription_id",
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("price_id", sa.String(255), nullable=True),
        sa.Column("product_id", sa.String(255), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("unit_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("billing_interval", sa.String(16), nullable=True),
        sa.Column("billing_interval_count", sa.Integer(), nullable=True),
        sa.Column("items", JSONDoc, nullable=True),
        sa.Column("trial_start", TS, nullable=True),
        sa.Column("trial_end", TS, nullable=True),
        sa.Column("current_period_start", TS, nullable=True),
        sa.Column("current_period_end", TS, nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=True),
        sa.Column("cancel_at", TS, nullable=True),
        sa.Column("canceled_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("trial_will_end_at", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
    )
    op.create_index("ix_stripe_subscriptions_customer_id", "stripe_subscriptions", ["customer_id"])
    op.create_index("ix_stripe_subscriptions_status", "stripe_subscriptions", ["status"])

    _keyed_table(
        "stripe_invoices",
        "stripe_invoice_id",
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("billing_reason", sa.String(64), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("amount_due_minor", sa.BigInteger(), nullable=True),
        sa.Column("amount_paid_minor", sa.BigInteger(), nullable=True),
        sa.Column("amount_remaining_minor", sa.BigInteger(), nullable=True),
        amount_column("amount_due_minor"),
        sa.Column("attempt_count", sa.Integer(), nullable=True),
        sa.Column("next_payment_attempt", TS, nullable=True),
        sa.Column("period_start", TS, nullable=True),
        sa.Column("period_end", TS, nullable=True),
        sa.Column("due_date", TS, nullable=True),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("marked_uncollectible_at", TS, nullable=True),
    )
    op.create_index("ix_stripe_invoices_customer_id", "stripe_invoices", ["customer_id"])
    op.create_index("ix_stripe_invoices_subscription_id", "stripe_invoices", ["subscription_id"])

    _keyed_table(
        "stripe_payment_methods",
        "stripe_payment_method_id",
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("type", sa.String(64), nullable=True),
        sa.Column("card_brand", sa.String(32), nullable=True),
        sa.Column("card_last4", sa.String(4), nullable=True),
        sa.Column("card_exp_month", sa.Integer(), nullable=True),
        sa.Column("card_exp_year", sa.Integer(), nullable=True),
        sa.Column("card_fingerprint", sa.String(255), nullable=True),
        sa.Column("attached", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("detached_at", TS, nullable=True),
    )
    op.create_index(
        "ix_stripe_payment_methods_card_fingerprint", "stripe_payment_methods", ["card_fingerprint"]
    )
    op.create_index(
        "ix_stripe_payment_methods_customer_id", "stripe_payment_methods", ["customer_id"]
    )

    op.create_table(
        "audit_log",
        _id(),
        sa.Column("occurred_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
        sa.Column("before", JSONDoc, nullable=True),
        sa.Column("after", JSONDoc, nullable=True),
        sa.Column("details", JSONDoc, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_object", "audit_log", ["object_type", "object_id"])
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"])
    _make_audit_log_append_only()

    op.add_column("stripe_events", sa.Column("claimed_by", sa.String(255), nullable=True))
    op.add_column("stripe_events", sa.Column("lease_expires_at", TS, nullable=True))


def _make_audit_log_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_log_is_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{operation.lower()} BEFORE {operation} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {operation} refused'); END"
            )


def downgrade() -> None:
    op.drop_column("stripe_events", "lease_expires_at")
    op.drop_column("stripe_events", "claimed_by")
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_log_is_append_only()")
    op.drop_table("stripe_payment_methods")
    op.drop_table("stripe_invoices")
    op.drop_table("stripe_subscriptions")
    op.drop_table("stripe_customers")
    op.drop_table("webhook_deliveries")
