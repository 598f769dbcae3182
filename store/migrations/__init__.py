"""Alembic migrations; run through store.migrate, never by the alembic CLI."""
