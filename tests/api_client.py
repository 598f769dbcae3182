"""An in-process API client on a fresh SQLite database, and helpers to make accounts and sign in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from accounts import User, create_user
from config import Secrets, Settings, apply_overrides
from store import Database
from web.app import build_app
from web.runtime import RUNTIME

Client = TestClient[web.Request, web.Application]
SECRET = "api-test-secret-key-with-at-least-32-bytes"
PASSWORD = "correct horse battery"



@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {"data_dir": str(tmp_path),
                                            "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as test_client:
        yield test_client


def database(client: Client) -> Database:
    return client.server.app[RUNTIME].db


async def make_user(client: Client, email: str, role: str = "viewer") -> User:
    async with database(client).write() as session:
        return await create_user(session, email, PASSWORD, role)


async def login(client: Client, email: str) -> dict[str, Any]:
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def bearer(client: Client, email: str, role: str = "viewer") -> dict[str, str]:
    """Authorization headers for a new account with this role."""
    await make_user(client, email, role)
    token = (await login(client, email))["access_token"]
    client.session.cookie_jar.clear()
    return {"Authorization": f"Bearer {token}"}
