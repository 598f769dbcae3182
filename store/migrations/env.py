"""Alembic environment: always runs on the connection `store.migrate` hands over, never opens its own."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
