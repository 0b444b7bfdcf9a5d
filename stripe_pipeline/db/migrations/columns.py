"""Column builders shared by migrations.

Revisions are history: change nothing here that an existing revision relies on;
add a new builder instead.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ZERO_DECIMAL = (
    "'bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', "
    "'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf'"
)
THREE_DECIMAL = "'bhd', 'jod', 'kwd', 'omr', 'tnd'"


def amount_column(minor: str = "amount_minor") -> sa.Column:
    """The plan's decimal ``amount``, generated from minor units and the currency."""
    expression = (
        f"CASE WHEN lower(currency) IN ({ZERO_DECIMAL}) THEN {minor} * 1.0 "
        f"WHEN lower(currency) IN ({THREE_DECIMAL}) THEN {minor} / 1000.0 "
        f"ELSE {minor} / 100.0 END"
    )
    return sa.Column(
        "amount", sa.Numeric(20, 3), sa.Computed(expression, persisted=True), nullable=True
    )


def timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def version_columns() -> list[sa.Column]:
    """The newest-event-wins guard of tables built from Stripe events."""
    return [
        sa.Column("stripe_created", sa.BigInteger(), nullable=True),
        sa.Column("livemode", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_event_id", sa.String(255), nullable=True),
        sa.Column("last_event_created", sa.BigInteger(), nullable=True),
        *timestamps(),
    ]
