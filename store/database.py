"""The database handle: SQLite (embedded default) or PostgreSQL, chosen by URL alone.

On SQLite every write transaction goes through one writer connection and starts with `BEGIN IMMEDIATE`.
Writers therefore queue in asyncio for that connection instead of racing inside SQLite, where a deferred
transaction that upgrades from read to write fails with "database is locked" however long the busy timeout.
Readers use their own pool in WAL mode, so reads never wait for writes, and are opened `query_only`.
Statement parameters are hidden from every error message, so a logged database error never carries user data.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from config.schema import DatabaseSettings
from store import sqlite_driver

logger = logging.getLogger(__name__)

_AFTER_COMMIT = "pinstream.after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run `callback` once the write transaction `session` belongs to has committed (not on rollback)."""
    callbacks: list[Callable[[], object]] = session.info.setdefault(_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


class Database:
    def __init__(self, settings: DatabaseSettings, password: str | None = None) -> None:
        url = make_url(settings.url)
        if password:
            url = url.set(password=password)
        self.url: URL = url
        self.is_sqlite = url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if url.database in (None, "", ":memory:"):
                raise ValueError("database.url: SQLite needs a file path (an in-memory database is per connection)")
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            connect = functools.partial(sqlite_driver.connect, url.database)
            self.writer = create_async_engine(url, pool_size=1, max_overflow=0, hide_parameters=True,
                                              pool_timeout=settings.writer_wait_seconds, async_creator=connect)
            self.reader = create_async_engine(url, pool_size=settings.pool_size, max_overflow=0,
                                              hide_parameters=True, pool_timeout=settings.writer_wait_seconds,
                                              async_creator=connect)
            _sqlite_setup(self.writer, settings.busy_timeout_ms, begin="BEGIN IMMEDIATE", query_only=False)
            _sqlite_setup(self.reader, settings.busy_timeout_ms, begin="BEGIN", query_only=True)
        else:
            self.writer = self.reader = create_async_engine(
                url, pool_size=settings.pool_size, max_overflow=settings.pool_size, hide_parameters=True,
                pool_timeout=settings.writer_wait_seconds, pool_pre_ping=True)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside a write transaction: committed on normal exit, rolled back on an exception."""
        async with self._write_sessions() as session:
            async with session.begin():
                yield session
            callbacks: list[Callable[[], object]] = session.info.pop(_AFTER_COMMIT, [])
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("after-commit callback failed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (on SQLite, writing through it is an error)."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _sqlite_setup(engine: AsyncEngine, busy_timeout_ms: int, begin: str, query_only: bool) -> None:
    # Take transaction control away from the sqlite3 module so that BEGIN is ours to emit.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if query_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
