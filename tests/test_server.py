"""The server as an admin runs it: a real process, its exit codes, its logs, signals and endpoints."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from store.migrate import head_revision
from tests.server_process import ROOT, ServerProcess
from tests.servers import PostgresServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path).start()
    yield process
    process.stop()


async def test_health_ready_metrics_and_json_logs(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz", headers={"X-Request-Id": "abc123"}) as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
            assert response.headers["X-Request-Id"] == "abc123"
        async with http.get(f"{server.url}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready", "checks": {"database": "ok", "media": "ok"}}
        async with http.get(f"{server.url}/no/such/page?token=sekrit") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
            assert response.status == 200 and response.content_type == "text/plain"
            assert 'pinstream_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    access = [entry for entry in server.logs() if entry.get("msg") == "request"]
    assert any(entry["request_id"] == "abc123" and entry["path"] == "/healthz" for entry in access)
    assert all(not entry.get("not_json") for entry in server.logs())
    assert "sekrit" not in server.log_path.read_text()
    assert (server.directory / "data" / "pinstream.db").exists()


async def test_sighup_applies_live_keys_and_survives_a_bad_file(server: ServerProcess) -> None:
    origin = {"Origin": "https://shop.example"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz", headers=origin) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        server.config_path.write_text("server:\n  cors_origins: [https://shop.example]\n  shutdown_timeout: 3\n")
        mark = len(server.logs())
        server.signal(signal.SIGHUP)
        entry = server.wait_for_log("config reloaded", after=mark)
        assert entry["applied"] == ["server.cors_origins"] and entry["needs_restart"] == ["server.shutdown_timeout"]
        async with http.get(f"{server.url}/healthz", headers=origin) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert "Location" in response.headers["Access-Control-Expose-Headers"]
        server.config_path.write_text("server:\n  cors_origins: not-a-list\n")
        mark = len(server.logs())
        server.signal(signal.SIGHUP)
        refused = server.wait_for_log("config reload refused, keeping the running configuration", after=mark)
        assert any("server.cors_origins" in problem for problem in refused["problems"])
        async with http.get(f"{server.url}/healthz", headers=origin) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"


async def test_file_change_is_picked_up_without_a_signal(server: ServerProcess) -> None:
    mark = len(server.logs())
    server.config_path.write_text("logging:\n  level: debug\n")
    entry = server.wait_for_log("config reloaded", after=mark)
    assert entry["applied"] == ["logging.level"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_exits_zero(tmp_path: Path, signum: signal.Signals) -> None:
    server = ServerProcess(tmp_path).start()
    started = time.monotonic()
    server.signal(signum)
    assert server.process is not None
    assert server.process.wait(timeout=20) == 0
    assert time.monotonic() - started < 15
    messages = [entry.get("msg") for entry in server.logs()]
    assert "shutting down: finishing in-flight requests" in messages and messages[-1] == "stopped"


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_server.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize(("text", "key"), [
    ("server:\n  port: [\n", "YAML syntax error"),
    ("server:\n  colour: red\n", "server.colour: unknown key"),
    ("server:\n  port: eighty\n", "server.port: Input should be a valid integer"),
    ("jobs:\n  batch: 100000\n", "jobs.batch: Input should be less than or equal to 1000"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    for args in (["--config", str(path)], ["check-config", str(path)]):
        result = _run(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert key in result.stderr and "Traceback" not in result.stderr
        assert all(line.startswith("config error: ") for line in result.stderr.splitlines())


def test_check_config_prints_effective_settings_with_secrets_redacted(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "PINSTREAM_SECRET_KEY": "s3cr3t-value"}
    result = _run("check-config", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "port: 8080" in result.stdout and "secret_key: (set)" in result.stdout
    assert "s3cr3t-value" not in result.stdout + result.stderr


def test_migrate_command(tmp_path: Path) -> None:
    result = _run("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "data" / "pinstream.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)


@pytest.mark.postgres
@pytest.mark.redis
async def test_scale_out_config_on_postgres_and_redis(tmp_path: Path, postgres_server: PostgresServer,
                                                      redis_url: str) -> None:
    """The same code on PostgreSQL + Redis from YAML alone; readiness follows Redis going away."""
    config = f"database:\n  url: {postgres_server.create_database()}\nredis:\n  url: {redis_url}\n"
    server = ServerProcess(tmp_path, config).start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["checks"] == {"database": "ok", "redis": "ok", "media": "ok"}
    finally:
        assert server.stop() == 0


async def test_create_user_and_stream_key_commands(tmp_path: Path) -> None:
    from accounts.stream_keys import user_for_stream_key
    from config.schema import DatabaseSettings
    from store import Database

    password_file = tmp_path / "pw"
    password_file.write_text("a long password\n")
    created = _run("create-user", "Host@Example.com", "--role", "host", "--password-file", str(password_file),
                   cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "created host host@example.com" in created.stdout
    again = _run("create-user", "host@example.com", "--password-file", str(password_file), cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    first, second = (_run("stream-key", "host@example.com", cwd=tmp_path) for _ in range(2))
    assert first.returncode == second.returncode == 0
    old_key, new_key = first.stdout.strip(), second.stdout.strip()
    assert new_key.startswith("psk_") and new_key != old_key
    assert new_key not in first.stderr + second.stderr  # printed once, on stdout, never logged
    database = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'pinstream.db'}"))
    try:
        async with database.read() as session:
            assert await user_for_stream_key(session, old_key) is None
            user = await user_for_stream_key(session, new_key)
            assert user is not None and user.email == "host@example.com"
    finally:
        await database.close()
    unknown = _run("stream-key", "nobody@example.com", cwd=tmp_path)
    assert unknown.returncode == 1 and "no account" in unknown.stderr
