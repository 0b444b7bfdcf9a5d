"""Crowded seconds listed in parallel: a listing slice may end at a cut.

A second holding more than a page of objects can only be paged by cursor. Where the
local rows name ids of that second, reconciliation starts one slice after each of
them, and each slice ends at the first of those ids it lists: ``stops`` keeps them
(comma-separated), so that a run that dies resumes such a slice with the same end.

Revision ID: 0017_listing_stops
Revises: 0016_money
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_listing_stops"
down_revision = "0016_money"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_listing_slices") as batch:
        batch.add_column(sa.Column("stops", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripe_listing_slices") as batch:
        batch.drop_column("stops")
