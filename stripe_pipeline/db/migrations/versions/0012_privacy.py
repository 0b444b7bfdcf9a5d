"""Personal data and retention: erasures, retention runs, and an audit log without personal values.

- ``erasures``: one row per erased customer (what was done, by whom, when), read by
  every write path so an erased customer stays erased;
- ``retention_runs``: each retention run, its counts and the ``stripe_events`` id it
  reached (the next run starts there);
- ``audit_log`` rows written before this revision copied personal values into
  ``before``/``after`` (customers' email and name, payment methods' card digits).
  They are rewritten once: a set personal value becomes ``[redacted]`` and
  ``details.personal_fields_changed`` names the fields that changed. Who did what
  stays exactly as it was (id, actor, action, object, time, event id, other fields).
  The append-only trigger is lifted for this one UPDATE, inside this revision's
  transaction, and put back before it commits; nothing else can write meanwhile
  (PostgreSQL's ALTER TABLE holds the table's lock until commit).

The rewrite is not reversible: a downgrade drops the new tables and leaves the audit
rows redacted. The field list below is frozen on purpose (a migration must do
tomorrow what it did today); the live list is ``stripe_pipeline/privacy/personal.py``.

Revision ID: 0012_privacy
Revises: 0011_invoice_payments
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from stripe_pipeline.db.migrations.columns import BigIntPK, JSONDoc

revision = "0012_privacy"
down_revision = "0011_invoice_payments"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
REDACTED = "[redacted]"
CHANGED_KEY = "personal_fields_changed"
# audit object_type -> personal fields, as of this revision
PERSONAL_AUDIT_FIELDS = {
    "customer": ("email", "name"),
    "payment": ("description",),
    "payment_method": ("card_last4", "card_exp_month", "card_exp_year"),
    "dispute": ("evidence",),
}
BATCH = 1000

AUDIT = sa.table(
    "audit_log",
    sa.column("id", sa.BigInteger()),
    sa.column("object_type", sa.String()),
    sa.column("before", JSONDoc),
    sa.column("after", JSONDoc),
    sa.column("details", JSONDoc),
)
# None binds as SQL NULL (a plain JSON column would write the JSON literal null)
JSON_OR_NULL = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
SQLITE_NO_UPDATE = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END"
)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), server_default="erasing", nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("erased_by", sa.String(255), nullable=True),
        sa.Column("erased_at", TS, nullable=True),
        sa.Column("runs", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("events_swept_to_id", sa.BigInteger(), nullable=True),
        sa.Column("counts", JSONDoc, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_erasures_customer_id")),
    )
    op.create_table(
        "retention_runs",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("started_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("status", sa.String(16), server_default="running", nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("triggered_by", sa.String(255), nullable=True),
        sa.Column("settings", JSONDoc, nullable=True),
        sa.Column("counts", JSONDoc, nullable=True),
        sa.Column("events_scanned_to_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    op.create_index(
        "ix_retention_runs_status_started_at", "retention_runs", ["status", "started_at"]
    )
    _redact_audit_log()


def _redacted(object_type: str, before, after, details):
    """(before, after, details) with personal values replaced, or None if unchanged."""
    fields = PERSONAL_AUDIT_FIELDS[object_type]
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    present = [f for f in sorted(fields) if f in old or f in new]
    if not any(v not in (None, REDACTED) for f in present for v in (old.get(f), new.get(f))):
        return None
    changed = [f for f in present if old.get(f) != new.get(f)]

    def mask(values):
        if not isinstance(values, dict):
            return values
        return {k: (REDACTED if k in fields and v is not None else v) for k, v in values.items()}

    if changed:
        base = details if isinstance(details, dict) else {}
        earlier = base.get(CHANGED_KEY) or []
        details = {**base, CHANGED_KEY: sorted({*earlier, *changed})}
    return mask(before), mask(after), details


def _redact_audit_log() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    else:
        op.execute("DROP TRIGGER audit_log_no_update")
    a = AUDIT.c
    update = (
        sa.update(AUDIT)
        .where(a.id == sa.bindparam("_id"))
        .values(
            before=sa.bindparam("before", type_=JSON_OR_NULL),
            after=sa.bindparam("after", type_=JSON_OR_NULL),
            details=sa.bindparam("details", type_=JSON_OR_NULL),
        )
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(a.id, a.object_type, a.before, a.after, a.details)
            .where(a.object_type.in_(list(PERSONAL_AUDIT_FIELDS)), a.id > last)
            .order_by(a.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        changes = []
        for row in rows:
            new = _redacted(row.object_type, row.before, row.after, row.details)
            if new is not None:
                changes.append(
                    {"_id": row.id, "before": new[0], "after": new[1], "details": new[2]}
                )
        if changes:
            conn.execute(update, changes)
    if postgres:
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    else:
        op.execute(SQLITE_NO_UPDATE)


def downgrade() -> None:
    op.drop_index("ix_retention_runs_status_started_at", table_name="retention_runs")
    op.drop_table("retention_runs")
    op.drop_table("erasures")
