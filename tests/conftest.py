"""Shared fixtures: settings on temporary files, migrated databases on SQLite and on a real PostgreSQL,
and a real Redis. Servers are started once per session; each test gets its own empty database."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accounts import passwords  # noqa: E402
from config.schema import DatabaseSettings  # noqa: E402
from store import Database, migrate  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

pytest_plugins = ["tests.api_client", "tests.media_peers"]


@pytest.fixture(autouse=True)
def cheap_hashing() -> Iterator[None]:
    """Argon2 at its cheapest: the tests check behaviour, not the cost of hashing."""
    passwords.configure(time_cost=1, memory_cost=8192, parallelism=1)
    yield
    passwords.configure()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis that is empty when the test starts."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'pinstream.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL on each backend in turn."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend in turn."""
    database = Database(DatabaseSettings(url=database_url))
    await migrate(database)
    yield database
    await database.close()
