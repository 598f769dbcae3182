"""Migrations apply on both backends and describe exactly what the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from store import Base, Database, current_revision, migrate
import store.models  # noqa: F401  (registers the foundation tables on Base.metadata)


async def test_migrations_reach_head_and_are_idempotent(db: Database) -> None:
    assert await current_revision(db) == "0001"
    await migrate(db)
    assert await current_revision(db) == "0001"


async def test_migrated_schema_matches_models(db: Database) -> None:
    async with db.writer.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []
