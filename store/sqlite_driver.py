"""aiosqlite with one trip to its thread per statement.

aiosqlite runs each call on the connection's own thread and hands the result back through the event loop:
SQLAlchemy's adapter makes four such calls per statement (open a cursor, execute, fetch the rows, close),
and each waits for a turn of the loop. Under load (a flash sale's flood of requests) every turn is long,
so a write transaction of a dozen statements held SQLite's single writer for hundreds of milliseconds.
Here `execute` runs the statement and fetches its rows in one call; opening and closing a cursor, and
reading the fetched rows, need no trip at all (the connection is opened with `check_same_thread=False`,
and SQLAlchemy uses a connection from one task at a time). It builds on aiosqlite's internals (its queue
call `_execute`, `_conn`, `_thread`), so setup.cfg pins aiosqlite to the 0.22 series; tests/test_store.py
counts the trips.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import aiosqlite
from aiosqlite.context import Result


class OneTripCursor(aiosqlite.Cursor):
    def __init__(self, conn: aiosqlite.Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._fetched: list[Any] = []

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> OneTripCursor:
        def run() -> list[Any]:
            self._cursor.execute(sql, () if parameters is None else parameters)  # type: ignore[arg-type]
            return self._cursor.fetchall() if self._cursor.description else []

        self._fetched = await self._execute(run)  # type: ignore[no-untyped-call]  # aiosqlite is untyped
        return self

    async def fetchall(self) -> list[Any]:
        rows, self._fetched = self._fetched, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._fetched = self._fetched[:count], self._fetched[count:]
        return rows

    async def fetchone(self) -> Any:
        return self._fetched.pop(0) if self._fetched else None

    async def close(self) -> None:
        self._fetched = []
        self._cursor.close()


class OneTripConnection(aiosqlite.Connection):
    def cursor(self) -> Result[OneTripCursor]:  # type: ignore[override]
        return Result(self._open_cursor())

    async def _open_cursor(self) -> OneTripCursor:
        return OneTripCursor(self, self._conn.cursor())


async def connect(database: str) -> OneTripConnection:
    """An open connection to the SQLite file `database` (SQLAlchemy's `async_creator`, with the path bound)."""
    connection = OneTripConnection(lambda: sqlite3.connect(database, check_same_thread=False), iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does: an unclosed connection must not hold the process
    await connection  # starts its thread and opens the file there
    return connection
