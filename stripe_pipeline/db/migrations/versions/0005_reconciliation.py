"""Reconciliation against the Stripe API: runs, discrepancies, watermarks.

Revision ID: 0005_reconciliation
Revises: 0004_recovery
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from stripe_pipeline.db.migrations.columns import BigIntPK, JSONDoc

revision = "0005_reconciliation"
down_revision = "0004_recovery"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
UNRESOLVED = "status IN ('open', 'ticketed')"


def _now(name: str) -> sa.Column:
    return sa.Column(name, TS, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        _now("started_at"),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("status", sa.String(16), server_default="running", nullable=False),
        sa.Column("full_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("window_start", TS, nullable=True),
        sa.Column("window_end", TS, nullable=True),
        sa.Column("triggered_by", sa.String(255), nullable=True),
        sa.Column("counts", JSONDoc, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
    )
    op.create_index(
        "ix_reconciliation_runs_status_started_at",
        "reconciliation_runs",
        ["status", "started_at"],
    )

    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("field", sa.String(64), server_default="", nullable=False),
        sa.Column("local_value", JSONDoc, nullable=True),
        sa.Column("remote_value", JSONDoc, nullable=True),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("ticket_id", sa.BigInteger(), nullable=True),
        sa.Column("first_seen_run_id", sa.BigInteger(), nullable=False),
        sa.Column("resolved_run_id", sa.BigInteger(), nullable=True),
        _now("created_at"),
        _now("updated_at"),
        sa.Column("resolved_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["reconciliation_runs.id"], name="fk_reconciliation_discrepancies_run"
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["payment_support_tickets.id"],
            name="fk_reconciliation_discrepancies_ticket",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_discrepancies")),
    )
    op.create_index(
        "uq_reconciliation_discrepancies_unresolved",
        "reconciliation_discrepancies",
        ["object_type", "object_id", "kind", "field"],
        unique=True,
        postgresql_where=sa.text(UNRESOLVED),
        sqlite_where=sa.text(UNRESOLVED),
    )
    op.create_index(
        "ix_reconciliation_discrepancies_run_id", "reconciliation_discrepancies", ["run_id"]
    )
    op.create_index(
        "ix_reconciliation_discrepancies_status", "reconciliation_discrepancies", ["status"]
    )

    op.create_table(
        "reconciliation_watermarks",
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("last_window_end", TS, nullable=False),
        sa.Column("last_run_id", sa.BigInteger(), nullable=True),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_reconciliation_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("reconciliation_watermarks")
    op.drop_table("reconciliation_discrepancies")
    op.drop_table("reconciliation_runs")
