"""Money to the bank: balance transactions and payouts (issue 16).

New domain tables, built from payout events, from the balance transactions payments,
refunds and disputes name, and from the nightly listings (``stripe_pipeline/catalog``):
every movement of the Stripe balance with its fee and net, and the payouts that carry
the balance to the bank. Payments and refunds get a nullable column naming their
balance transaction; no existing value is rewritten.

Revision ID: 0016_money
Revises: 0015_billing
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, amount_column, version_columns

revision = "0016_money"
down_revision = "0015_billing"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _s(name: str, length: int = 255, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _big(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


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


INDEXES = (
    (
        "ix_stripe_balance_transactions_payout_id",
        "stripe_balance_transactions",
        ["payout_id"],
    ),
    (
        "ix_stripe_balance_transactions_source_id",
        "stripe_balance_transactions",
        ["source_id"],
    ),
    ("ix_stripe_payouts_status_arrival_date", "stripe_payouts", ["status", "arrival_date"]),
)


LINKED = ("stripe_payments", "stripe_refunds")


def upgrade() -> None:
    _keyed_table(
        "stripe_balance_transactions",
        "stripe_balance_transaction_id",
        _s("type", 64),
        _s("reporting_category", 64),
        _big("amount_minor", nullable=False),
        _big("fee_minor", nullable=False),
        _big("net_minor", nullable=False),
        _s("currency", 3, nullable=False),
        amount_column(),
        sa.Column("exchange_rate", sa.Numeric(24, 12), nullable=True),
        _s("source_id"),
        _s("source_type", 64),
        _s("payout_id"),
        sa.Column("available_on", TS, nullable=True),
        _s("status", 32),
        sa.Column("description", sa.Text(), nullable=True),
    )
    _keyed_table(
        "stripe_payouts",
        "stripe_payout_id",
        _big("amount_minor", nullable=False),
        _s("currency", 3, nullable=False),
        amount_column(),
        _s("status", 32, nullable=False),
        sa.Column("arrival_date", TS, nullable=True),
        sa.Column("automatic", sa.Boolean(), nullable=True),
        _s("method", 32),
        _s("destination_id"),
        _s("destination_type", 32),
        _s("failure_code"),
        sa.Column("failure_message", sa.Text(), nullable=True),
        _s("reconciliation_status", 32),
        _s("balance_transaction_id"),
        _s("failure_balance_transaction_id"),
        sa.Column("description", sa.Text(), nullable=True),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    # payments and refunds name their balance transaction (fetched when not stored)
    for table in LINKED:
        op.add_column(table, _s("balance_transaction_id"))


def downgrade() -> None:
    for table in LINKED:
        op.drop_column(table, "balance_transaction_id")
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_table("stripe_payouts")
    op.drop_table("stripe_balance_transactions")
