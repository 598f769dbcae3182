"""Migrations apply on both backends and describe exactly what the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import accounts.models  # noqa: F401  (registers the account tables on Base.metadata)
import commerce.models  # noqa: F401  (registers the commerce tables on Base.metadata)
import overlay.models  # noqa: F401  (registers the overlay tables on Base.metadata)
import rooms.models  # noqa: F401  (registers the room tables on Base.metadata)
import store.models  # noqa: F401  (registers the foundation tables on Base.metadata)
from store import Base, Database, current_revision, migrate
from store.migrate import head_revision


async def test_migrations_reach_head_and_are_idempotent(db: Database) -> None:
    assert await current_revision(db) == head_revision()
    await migrate(db)
    assert await current_revision(db) == head_revision()


async def test_migrated_schema_matches_models(db: Database) -> None:
    async with db.writer.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []
