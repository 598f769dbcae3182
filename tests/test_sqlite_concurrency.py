"""SQLite under many concurrent writers.

A deferred transaction that reads and then writes fails with "database is locked" as soon as another
connection committed in between, however long the busy timeout. The writer discipline of `store.database`
(one writer connection, BEGIN IMMEDIATE) makes such transactions queue instead, in one process and across
several engines on one file; readers meanwhile see the last committed state without waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update

from config.schema import DatabaseSettings
from store import Database
from tests.conftest import sqlite_url

pytestmark = pytest.mark.timeout(60)

counter_metadata = MetaData()
counters = Table(
    "counters", counter_metadata,
    Column("name", String(50), primary_key=True),
    Column("value", Integer, nullable=False),
)


async def counter_database(tmp_path: Path) -> Database:
    db = Database(DatabaseSettings(url=sqlite_url(tmp_path)))
    async with db.writer.begin() as connection:
        await connection.run_sync(counter_metadata.create_all)
    async with db.write() as session:
        await session.execute(insert(counters).values(name="hits", value=0))
    return db


async def read_counter(db: Database) -> int:
    async with db.read() as session:
        return int((await session.execute(select(counters.c.value))).scalar_one())


async def increment(db: Database) -> None:
    """Read, yield to every other writer, then write what was read plus one."""
    async with db.write() as session:
        query = select(counters.c.value).where(counters.c.name == "hits")
        value = (await session.execute(query)).scalar_one()
        await asyncio.sleep(0)
        await session.execute(update(counters).where(counters.c.name == "hits").values(value=value + 1))


def test_a_deferred_read_then_write_transaction_fails_whatever_the_busy_timeout(tmp_path: Path) -> None:
    """Why the writer discipline exists: this is the failure the tests below must never see."""
    path = tmp_path / "plain.db"
    first, second = (sqlite3.connect(path, isolation_level=None, timeout=5.0) for _ in range(2))
    try:
        first.execute("PRAGMA journal_mode=WAL")
        first.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        first.execute("INSERT INTO counters VALUES ('hits', 0)")
        for connection in (first, second):
            connection.execute("BEGIN")
            connection.execute("SELECT value FROM counters").fetchone()
        first.execute("UPDATE counters SET value = value + 1")
        first.execute("COMMIT")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            second.execute("UPDATE counters SET value = value + 1")
        assert time.monotonic() - started < 2.0, "fails at once: the busy timeout cannot help"
    finally:
        first.close()
        second.close()


async def test_200_concurrent_read_then_write_transactions_all_succeed(tmp_path: Path) -> None:
    db = await counter_database(tmp_path)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(increment(db) for _ in range(200)), return_exceptions=True), 30)
        assert [r for r in results if r is not None] == []
        assert await read_counter(db) == 200
    finally:
        await db.close()


async def test_two_engines_on_one_file_with_100_writers_each_all_succeed(tmp_path: Path) -> None:
    """Like a CLI process writing alongside the server: the busy timeout queues one engine behind the
    other, and since each transaction takes its write lock at BEGIN, waiting is always enough."""
    first = await counter_database(tmp_path)
    second = Database(DatabaseSettings(url=sqlite_url(tmp_path)))
    try:
        writers = [increment(db) for _ in range(100) for db in (first, second)]
        results = await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 30)
        assert [r for r in results if r is not None] == []
        assert await read_counter(first) == await read_counter(second) == 200
    finally:
        await first.close()
        await second.close()


async def test_readers_are_not_blocked_by_a_long_write(tmp_path: Path) -> None:
    db = await counter_database(tmp_path)
    try:
        async with db.write() as session:
            await session.execute(update(counters).values(value=999))
            async with asyncio.timeout(2):
                # Many readers at once, while the write transaction stays open: all see the last commit.
                assert await asyncio.gather(*(read_counter(db) for _ in range(20))) == [0] * 20
        assert await read_counter(db) == 999
    finally:
        await db.close()
