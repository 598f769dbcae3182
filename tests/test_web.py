"""Request handling every route shares: error format, CORS, body limits, request ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import Secrets, Settings, apply_overrides
from web.app import build_app
from web.errors import ApiError


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("database password is hunter2")


async def _conflict(_request: web.Request) -> web.Response:
    raise ApiError(409, "sold_out", "no stock left", field="quantity")


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"bytes": len(await request.read())})


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path),
        "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "server.cors_origins": ["https://shop.example"],
        "server.max_body_bytes": 2048,
    })
    app = build_app(settings, Secrets())
    app.router.add_get("/test/boom", _boom)
    app.router.add_get("/test/conflict", _conflict)
    app.router.add_post("/test/echo", _echo)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_errors_share_one_format_and_never_leak(client: TestClient[web.Request, web.Application],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    response = await client.get("/test/conflict")
    assert response.status == 409
    expected = {"code": "sold_out", "message": "no stock left", "field": "quantity"}
    assert await response.json() == {"error": expected}
    response = await client.get("/test/boom")
    assert response.status == 500
    body = await response.json()
    assert body["error"]["code"] == "internal_error" and "hunter2" not in str(body)
    assert response.headers["X-Request-Id"] in body["error"]["message"]
    response = await client.post("/healthz")
    assert response.status == 405 and (await response.json())["error"]["code"] == "method_not_allowed"


async def test_body_limit_is_413_json(client: TestClient[web.Request, web.Application]) -> None:
    assert (await (await client.post("/test/echo", data=b"x" * 1000)).json()) == {"bytes": 1000}
    response = await client.post("/test/echo", data=b"x" * 5000)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post("/test/echo", data=chunks())  # chunked: no Content-Length up front
    assert response.status == 413


async def test_cors_preflight_and_exposed_headers(client: TestClient[web.Request, web.Application]) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    response = await client.options("/test/echo", headers=preflight)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    response = await client.options("/test/echo", headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.get("/test/conflict", headers={"Origin": "https://shop.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Location" in response.headers["Access-Control-Expose-Headers"]


async def test_socketio_is_attached(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert response.status == 200
    assert (await response.text()).startswith("0{")
