"""Apply Alembic migrations (at start, or by `run_server.py migrate`), safely from several nodes at once."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from store.database import Database

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed number: the PostgreSQL advisory lock that makes concurrent migrators take turns.
_PG_MIGRATION_LOCK = 0x50494E53


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, is_sqlite: bool) -> None:
    if not is_sqlite:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


async def migrate(db: Database) -> None:
    """Upgrade to the newest revision. On SQLite the writer's BEGIN IMMEDIATE serialises migrators."""
    async with db.writer.begin() as connection:
        await connection.run_sync(_upgrade, db.is_sqlite)


def head_revision() -> str:
    """The newest revision the code ships."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    async with db.reader.connect() as connection:
        exists = await connection.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version"))
        if not exists:
            return None
        return (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
