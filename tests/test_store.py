"""Migrations apply on both backends and describe exactly what the models declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

import accounts.models  # noqa: F401  (registers the account tables on Base.metadata)
import commerce.models  # noqa: F401  (registers the commerce tables on Base.metadata)
import overlay.models  # noqa: F401  (registers the overlay tables on Base.metadata)
import rooms.models  # noqa: F401  (registers the room tables on Base.metadata)
import store.models  # noqa: F401  (registers the foundation tables on Base.metadata)
from config.schema import DatabaseSettings
from store import Base, Database, current_revision, migrate
from store.migrate import head_revision
from store.sqlite_driver import OneTripConnection


async def test_migrations_reach_head_and_are_idempotent(db: Database) -> None:
    assert await current_revision(db) == head_revision()
    await migrate(db)
    assert await current_revision(db) == head_revision()


async def test_migrated_schema_matches_models(db: Database) -> None:
    async with db.writer.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []


async def test_sqlite_statements_take_one_trip_to_the_database_thread(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statement costs one hand-off to aiosqlite's thread and back through the event loop (four with
    aiosqlite's own cursor), and its rows, row count and new row id still come back."""
    db = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}"))
    trips = 0
    original = OneTripConnection._execute

    async def counted(self: OneTripConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await original(self, fn, *args, **kwargs)

    try:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        monkeypatch.setattr(OneTripConnection, "_execute", counted)
        async with db.write() as session:
            await session.execute(text("SELECT 1"))  # the transaction has begun (BEGIN IMMEDIATE: a trip of its own)
            trips = 0
            inserted = await session.execute(text("INSERT INTO t (name) VALUES ('a'), ('b')"))
            assert inserted.rowcount == 2 and trips == 1
            trips = 0
            rows = (await session.execute(text("SELECT id, name FROM t ORDER BY id"))).all()
            assert [tuple(row) for row in rows] == [(1, "a"), (2, "b")] and trips == 1
            returned = await session.execute(text("INSERT INTO t (name) VALUES ('c') RETURNING id"))
            assert returned.scalar_one() == 3
        async with db.read() as session:
            assert await session.scalar(text("SELECT count(*) FROM t")) == 3
    finally:
        await db.close()
