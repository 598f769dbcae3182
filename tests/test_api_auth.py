"""Sign-up, login, refresh, logout, token checks, CSRF, rate limits and the generated secret key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accounts import issue_access_token, tokens
from bus import redis_client
from config import Secrets, Settings, apply_overrides
from config.secrets import ensure_secret_key
from store import now_ms
from tests.api_client import PASSWORD, SECRET, Client, login, make_user
from tests.servers import RedisServer
from web.app import build_app
from web.errors import ApiError
from web.ratelimit import MemoryCounters, RateLimiter, RedisCounters


async def test_signup_login_me_refresh_logout(client: Client) -> None:
    response = await client.post("/api/auth/signup", json={"email": "Ann@Example.com", "password": PASSWORD,
                                                            "display_name": "Ann"})
    assert response.status == 201
    assert (await response.json())["role"] == "viewer"
    response = await client.post("/api/auth/signup", json={"email": "ann@example.com", "password": PASSWORD,
                                                            "display_name": "Ann"})
    assert response.status == 409 and (await response.json())["error"]["code"] == "email_taken"

    response = await client.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert response.status == 200
    tokens = await response.json()
    cookies = {cookie.key: cookie for cookie in response.cookies.values()}
    assert cookies["pinstream_access"]["httponly"] and cookies["pinstream_access"]["samesite"] == "Lax"
    assert cookies["pinstream_access"]["path"] == "/"
    assert cookies["pinstream_refresh"]["httponly"] and cookies["pinstream_refresh"]["samesite"] == "Strict"
    assert cookies["pinstream_refresh"]["path"] == "/api/auth"
    assert not cookies["pinstream_csrf"]["httponly"] and cookies["pinstream_csrf"]["samesite"] == "Strict"
    assert cookies["pinstream_csrf"].value == tokens["csrf_token"]
    assert not cookies["pinstream_access"]["secure"]

    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status == 200 and (await me.json())["email"] == "ann@example.com"
    assert (await client.get("/api/auth/me")).status == 200  # by cookie

    response = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status == 200
    rotated = await response.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    response = await client.post("/api/auth/refresh", json={})  # from the cookie, set by the last answer
    assert response.status == 200
    response = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status == 401 and (await response.json())["error"]["code"] == "refresh_reused"

    fresh = await login(client, "ann@example.com")
    response = await client.post("/api/auth/logout", json={})
    assert response.status == 204
    assert response.cookies["pinstream_access"].value == ""
    client.session.cookie_jar.clear()
    assert (await client.get("/api/auth/me")).status == 401
    response = await client.post("/api/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert response.status == 401


async def test_bad_credentials_and_expired_or_forged_tokens(client: Client) -> None:
    user = await make_user(client, "bob@example.com")
    response = await client.post("/api/auth/login", json={"email": "bob@example.com", "password": "wrong one"})
    assert response.status == 401 and (await response.json())["error"]["code"] == "bad_credentials"
    expired = issue_access_token(user, SECRET, 1, now_ms=now_ms() - 3_600_000)
    response = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status == 401 and (await response.json())["error"]["code"] == "token_expired"
    forged = issue_access_token(user, "another-secret-key-of-at-least-32-bytes!", 15)
    response = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status == 401 and (await response.json())["error"]["code"] == "token_invalid"
    # A public operation ignores a bad token instead of refusing.
    response = await client.get("/api/shows", headers={"Authorization": f"Bearer {expired}"})
    assert response.status == 200


async def test_csrf_is_required_for_cookie_writes_only(client: Client) -> None:
    await make_user(client, "host@example.com", "host")
    tokens = await login(client, "host@example.com")  # cookies now in the client's jar
    response = await client.post("/api/me/stream-key")
    assert response.status == 403 and (await response.json())["error"]["code"] == "csrf_failed"
    response = await client.post("/api/me/stream-key", headers={"X-CSRF-Token": "not-the-cookie"})
    assert response.status == 403
    response = await client.post("/api/me/stream-key", headers={"X-CSRF-Token": tokens["csrf_token"]})
    assert response.status == 201
    assert (await client.get("/api/auth/me")).status == 200  # safe methods need no token
    client.session.cookie_jar.clear()
    response = await client.post("/api/me/stream-key",
                                 headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status == 201


async def test_login_is_rate_limited(client: Client) -> None:
    await make_user(client, "eve@example.com")
    wrong = {"email": "eve@example.com", "password": "guess guess"}
    for _ in range(10):
        assert (await client.post("/api/auth/login", json=wrong)).status == 401
    response = await client.post("/api/auth/login", json={"email": "eve@example.com", "password": PASSWORD})
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_writes_are_rate_limited_per_account(tmp_path: Path) -> None:
    clock = [0.0]
    settings = apply_overrides(Settings(), {"rate_limits.writes_per_minute": 2}).rate_limits
    limiter = RateLimiter(lambda: settings, MemoryCounters(clock=lambda: clock[0]))
    await limiter.check("write", "10.0.0.1", 7)
    await limiter.check("write", "10.0.0.2", 7)
    with pytest.raises(ApiError) as refused:
        await limiter.check("write", "10.0.0.3", 7)
    assert refused.value.code == "rate_limited" and refused.value.headers["Retry-After"] == "60"
    clock[0] = 60.0
    await limiter.check("write", "10.0.0.3", 7)


@pytest.mark.redis
async def test_rate_limits_are_shared_through_redis(redis_url: str, redis_server: RedisServer) -> None:
    """Two nodes count against one limit; with Redis gone each node falls back to its own count."""
    settings = apply_overrides(Settings(), {"rate_limits.login_per_minute": 3}).rate_limits
    first, second = (redis_client(redis_url, None) for _ in range(2))
    nodes = [RateLimiter(lambda: settings, RedisCounters(first)), RateLimiter(lambda: settings, RedisCounters(second))]
    try:
        for node in (nodes[0], nodes[1], nodes[0]):
            await node.check("login", "10.0.0.9", None)
        with pytest.raises(ApiError) as refused:
            await nodes[1].check("login", "10.0.0.9", None)
        assert 55 <= int(refused.value.headers["Retry-After"]) <= 60
        await nodes[1].check("login", "10.0.0.10", None)  # another address has its own count
        redis_server.stop()
        for _ in range(3):
            await nodes[0].check("login", "10.0.0.11", None)  # counted in memory now
        with pytest.raises(ApiError):
            await nodes[0].check("login", "10.0.0.11", None)
    finally:
        for client in (first, second):
            await client.aclose()


async def test_first_admin_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINSTREAM_ADMIN_EMAIL", "root@example.com")
    monkeypatch.setenv("PINSTREAM_ADMIN_PASSWORD", PASSWORD)
    settings = apply_overrides(Settings(), {"data_dir": str(tmp_path),
                                            "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"})
    async with TestClient(TestServer(build_app(settings, Secrets()))) as test_client:
        assert (await login(test_client, "root@example.com"))["user"]["role"] == "admin"
    assert (tmp_path / "secret_key").exists()


def test_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = apply_overrides(Settings(), {"data_dir": str(tmp_path / "data")})
    first = ensure_secret_key(settings, Secrets())
    assert first.secret_key and len(first.secret_key) >= 32
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_secret_key(settings, Secrets()).secret_key == first.secret_key
    assert ensure_secret_key(settings, Secrets(secret_key="given")).secret_key == "given"


async def test_guest_identity_is_signed_and_not_an_account(client: Client) -> None:
    response = await client.post("/api/auth/guest", json={"nickname": "  denimfan "})
    assert response.status == 201
    body = await response.json()
    assert body["nickname"] == "denimfan" and body["expires_at"] > 0
    principal = tokens.verify_token(body["guest_token"], SECRET)
    assert principal.is_guest and principal.nickname == "denimfan" and principal.user_id is None
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['guest_token']}"})
    assert me.status == 401  # a guest may watch and chat, but has no account
    bad = await client.post("/api/auth/guest", json={"nickname": "<script>"})
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "nickname"
