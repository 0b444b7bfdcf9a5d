"""Alembic environment: migrations run against the engine given by ``migrate.py``."""

from alembic import context

from stripe_pipeline.db.models import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # each revision commits on its own, so one that needs an autocommit block
        # (CREATE INDEX CONCURRENTLY) leaves the ones before it complete
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
