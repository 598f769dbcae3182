"""The media process model with real worker processes: the wire protocol, calls and events across the process
boundary, concurrency, timeouts, a worker killed mid-run, graceful stops, and the server surviving it all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config.schema import IceSettings, MediaSettings
from media.api import MediaError, MediaEvent
from media.protocol import (
    MAX_LINE,
    Event,
    Init,
    MessageReader,
    ProtocolError,
    Ready,
    Request,
    Response,
    decode,
    encode,
)
from media.router import MediaRouter, merge_stats
from media.supervisor import BACKOFF, MediaSupervisor
from tests.server_process import ServerProcess

FAKE = "tests.media_fake:FakeMediaService"
SETTINGS = MediaSettings(ice=IceSettings(port_min=40000, port_max=40100))


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


@pytest.fixture
async def media() -> AsyncIterator[MediaSupervisor]:
    supervisor = MediaSupervisor(SETTINGS, service=FAKE, timeout=5)
    await supervisor.start()
    await supervisor.wait_ready()
    yield supervisor
    await supervisor.stop()


def record(supervisor: MediaSupervisor | MediaRouter) -> list[MediaEvent]:
    events: list[MediaEvent] = []
    supervisor.subscribe(events.append)
    return events


# --- the wire protocol ----------------------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    error = MediaError("bad_sdp", "the offer has no video", 400, field="sdp")
    event = MediaEvent("track.up", room="a", session_id="s", kind="publisher", data={"codec": "video/VP8"})
    for message in (Init({"media": {"workers": 1}}), Ready(42), Request(1, "stats", {}), Response(2, {"x": [1]}),
                     Response(3, error=error), Event(event)):
        line = encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        decoded = decode(line[:-1])
        if isinstance(message, Response) and message.error is not None:
            assert isinstance(decoded, Response) and decoded.error is not None
            assert decoded.error.to_dict() == error.to_dict()
        else:
            assert decoded == message


@pytest.mark.parametrize(("line", "request_id"), [
    (b"not json", None), (b"\xff\xfe", None), (b"[1, 2]", None), (b'{"what": 1}', None),
    (b'{"id": "7", "method": "stats"}', None), (b'{"id": true, "method": "stats"}', None),
    (b'{"id": 7, "method": 5}', 7), (b'{"id": 7, "method": "stats", "params": []}', 7),
    (b'{"id": 7, "error": {"code": 1}}', 7), (b'{"id": 7, "result": 1, "error": {}}', 7),
    (b'{"id": 7, "error": {"code": "c", "message": "m", "status": 400, "field": 3}}', 7),
    (b'{"event": {"type": "explosion"}}', None), (b'{"event": {"type": "track.up", "colour": 1}}', None),
    (b'{"ready": {"pid": "x"}}', None),
])
def test_garbage_is_a_protocol_error(line: bytes, request_id: int | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(line)
    assert caught.value.request_id == request_id


def test_oversized_messages_are_refused() -> None:
    with pytest.raises(ProtocolError):
        encode(Request(1, "open_publisher", {"offer_sdp": "x" * MAX_LINE}))


async def test_reader_skips_an_oversized_line_whole() -> None:
    stream = asyncio.StreamReader(limit=MAX_LINE)
    stream.feed_data(b"x" * (3 * MAX_LINE) + b'{"id": 1, "method": "still part of the long line"}\n')
    stream.feed_data(encode(Request(2, "stats", {})))
    stream.feed_data(b'{"id": 3, "method": "stats", "params": {}')  # cut off by the end of the stream
    stream.feed_eof()
    reader = MessageReader(stream)
    with pytest.raises(ProtocolError, match="longer than"):
        await reader.read()
    assert await reader.read() == Request(2, "stats", {})
    assert await reader.read() is None


def test_stats_of_several_workers_merge() -> None:
    merged = merge_stats([{"rooms": {"a": {"viewers": 2}}, "sessions": 3, "codecs": ["video/VP8"]},
                          {"rooms": {"b": {"viewers": 1}}, "sessions": 1, "codecs": ["audio/opus"]}])
    assert merged == {"rooms": {"a": {"viewers": 2}, "b": {"viewers": 1}}, "sessions": 4,
                      "codecs": ["video/VP8", "audio/opus"]}


# --- a worker process, driven by hand -------------------------------------------------------------------------


async def _raw_worker(*extra: str) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]:
    parent, child = socket.socketpair()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "media.worker", "--control-fd", str(child.fileno()), *extra,
        pass_fds=(child.fileno(),), env=MediaSupervisor._env(), stderr=asyncio.subprocess.PIPE)
    child.close()
    reader, writer = await asyncio.open_connection(sock=parent, limit=MAX_LINE)
    return process, reader, writer


async def test_worker_answers_bad_requests_and_survives_garbage() -> None:
    process, reader, writer = await _raw_worker("--service", FAKE)
    writer.write(encode(Init({"media": SETTINGS.model_dump(mode="json")})))
    messages = MessageReader(reader)
    assert isinstance(await messages.read(), Ready)
    writer.write(b"not json\n\xff\xfe\n[1]\n" + b"y" * (2 * MAX_LINE) + b"\n")
    writer.write(b'{"id": 7, "method": 5}\n')
    writer.write(b'{"id": 8, "method": "format_disk", "params": {}}\n')
    writer.write(b'{"id": 9, "method": "open_publisher", "params": {"room": 1}}\n')
    writer.write(b'{"id": 10, "method": "open_publisher", "params": {"room": "a", "session_id": "s", '
                 b'"offer_sdp": "crash"}}\n')
    writer.write(encode(Request(11, "stats", {})))
    answers: dict[int, Response] = {}
    while 11 not in answers:
        message = await asyncio.wait_for(messages.read(), 10)
        if isinstance(message, Response):
            answers[message.id] = message
    assert {(a.error.code, a.error.status) for i, a in answers.items() if i < 10 and a.error} == {("bad_request", 400)}
    assert set(answers) == {7, 8, 9, 10, 11}
    assert answers[10].error is not None and answers[10].error.to_dict()["status"] == 500
    assert answers[10].error.code == "media_internal" and "broke" not in answers[10].error.message
    assert answers[11].result["calls"] == 1
    writer.write_eof()  # the web process went away: the worker ends by itself
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert process.stderr is not None
    logs = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines()]
    assert any(entry["msg"] == "media request failed" and "the fake service broke" in entry["exc"] for entry in logs)
    assert logs[-1]["msg"] == "media worker stopped"
    writer.close()


@pytest.mark.parametrize("first", [b"", b"garbage\n", encode(Init({"media": {"workers": 0}}))])
async def test_worker_without_valid_settings_exits_2(first: bytes) -> None:
    process, _reader, writer = await _raw_worker("--service", FAKE)
    writer.write(first)
    writer.write_eof()
    assert await asyncio.wait_for(process.wait(), 10) == 2
    assert process.stderr is not None
    assert all(json.loads(line) for line in (await process.stderr.read()).decode().splitlines())
    writer.close()


# --- the supervisor: calls and events across the process boundary ----------------------------------------------


async def test_stats_round_trip_with_settings_passed_off_argv(media: MediaSupervisor) -> None:
    stats = await media.stats()
    assert stats["pid"] == media.pid != os.getpid()
    assert stats["ice_ports"] == [40000, 40100]
    argv = _argv(media.pid)
    assert "media.worker" in argv and not any("40000" in arg for arg in argv)


def _argv(pid: int | None) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


async def test_media_errors_cross_the_process_boundary(media: MediaSupervisor) -> None:
    with pytest.raises(MediaError) as refused:
        await media.open_publisher("room", "s1", "refuse:publisher_exists:409:room")
    assert (refused.value.code, refused.value.status, refused.value.message, refused.value.field) == (
        "publisher_exists", 409, "refused: publisher_exists", "room")
    with pytest.raises(MediaError) as crashed:
        await media.open_viewer("room", "s2", "crash")
    assert (crashed.value.code, crashed.value.status) == ("media_internal", 500)
    with pytest.raises(MediaError) as not_live:
        await media.request_keyframe("nowhere")
    assert (not_live.value.code, not_live.value.status) == ("not_live", 404)
    assert (await media.stats())["calls"] == 2  # the same worker, still serving


async def test_answers_and_events(media: MediaSupervisor) -> None:
    events = record(media)
    answer = await media.open_publisher("room", "pub", "offer")
    assert (answer.session_id, answer.sdp, answer.codecs) == ("pub", "answer to offer", ["video/VP8"])
    await media.request_keyframe("room")
    assert await media.close_session("pub") is True
    assert await media.close_session("pub") is False
    await until(lambda: len(events) == 2)
    assert [(e.type, e.room, e.session_id) for e in events] == [("track.up", "room", "pub"),
                                                                ("session.closed", "room", "pub")]
    assert events[0].kind == "publisher" and events[0].data == {"track": "video"}


async def test_calls_run_concurrently(media: MediaSupervisor) -> None:
    started = time.monotonic()
    slow = [asyncio.create_task(media.open_viewer("room", f"v{i}", "sleep:2")) for i in range(5)]
    await asyncio.sleep(0.1)
    await media.stats()
    assert not any(task.done() for task in slow)  # not queued behind the slow negotiations
    answers = await asyncio.gather(*slow)
    assert [a.session_id for a in answers] == [f"v{i}" for i in range(5)]
    assert time.monotonic() - started < 5  # one after another would take 10 s
    assert (await media.stats())["sessions"] == 5


async def test_timeout_is_503_and_the_late_session_is_closed() -> None:
    supervisor = MediaSupervisor(SETTINGS, service=FAKE, timeout=0.5)
    events = record(supervisor)
    await supervisor.start()
    try:
        await until(lambda: supervisor.pid is not None)
        with pytest.raises(MediaError) as caught:
            await supervisor.open_publisher("room", "late", "sleep:1.2")
        assert (caught.value.code, caught.value.status) == ("media_timeout", 503)
        await until(lambda: any(e.type == "session.closed" and e.session_id == "late" for e in events))
        assert (await supervisor.stats())["sessions"] == 0
    finally:
        await supervisor.stop()


async def test_killed_worker_is_restarted(media: MediaSupervisor) -> None:
    events = record(media)
    await media.open_publisher("shop", "host", "offer")
    await media.open_viewer("shop", "fan", "offer")
    in_flight = asyncio.create_task(media.open_viewer("shop", "slow", "sleep:30"))
    await asyncio.sleep(0.2)
    old_pid = media.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(MediaError) as caught:
        await in_flight
    assert (caught.value.code, caught.value.status) == ("media_restarted", 503)
    await until(lambda: any(e.type == "worker.restarted" for e in events))
    lost = [(e.session_id, e.kind, e.data) for e in events if e.type == "session.closed"]
    assert sorted(lost, key=str) == [("fan", "viewer", {"reason": "worker_died"}),
                                     ("host", "publisher", {"reason": "worker_died"})]
    restarted = next(e for e in events if e.type == "worker.restarted")
    assert restarted.data["sessions"] == ["fan", "host"] and restarted.data["rooms"] == ["shop"]
    assert restarted.data["exit_code"] == -signal.SIGKILL and restarted.data["restarts"] == 1
    assert restarted.data["pid"] == media.pid != old_pid
    answer = await media.open_publisher("shop", "host-again", "offer")
    assert answer.session_id == "host-again"
    assert (await media.stats())["sessions"] == 1


async def test_worker_exiting_by_itself_is_restarted(media: MediaSupervisor) -> None:
    events = record(media)
    with pytest.raises(MediaError) as caught:
        await media.open_publisher("room", "s", "exit")
    assert (caught.value.code, caught.value.status) == ("media_restarted", 503)
    await until(lambda: any(e.type == "worker.restarted" for e in events))
    assert media.last_exit_code == 3
    assert (await media.stats())["sessions"] == 0


async def test_sigterm_closes_sessions_then_the_worker_is_restarted(media: MediaSupervisor) -> None:
    events = record(media)
    await media.open_publisher("room", "s", "offer")
    assert media.pid is not None
    os.kill(media.pid, signal.SIGTERM)
    await until(lambda: any(e.type == "worker.restarted" for e in events))
    closed = [e for e in events if e.type == "session.closed"]
    assert len(closed) == 1 and closed[0].data == {}  # closed by the worker itself, not lost
    assert media.last_exit_code == 0
    assert next(e for e in events if e.type == "worker.restarted").data["sessions"] == []


async def test_stop_closes_the_channel_and_sessions_end_cleanly() -> None:
    supervisor = MediaSupervisor(SETTINGS, service=FAKE, timeout=5)
    events = record(supervisor)
    await supervisor.start()
    pid = await supervisor.wait_ready()
    await supervisor.open_publisher("room", "a", "offer")
    await supervisor.open_viewer("room", "b", "offer")
    started = time.monotonic()
    await supervisor.stop()
    assert time.monotonic() - started < 3
    assert supervisor.last_exit_code == 0
    assert sorted(e.session_id or "" for e in events if e.type == "session.closed") == ["a", "b"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(MediaError) as caught:
        await supervisor.stats()
    assert (caught.value.code, caught.value.status) == ("media_unavailable", 503)


async def test_a_worker_that_cannot_start_is_retried_and_stop_still_works(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = MediaSupervisor(SETTINGS, service="tests.media_fake:NoSuchService", timeout=1)
    await supervisor.start()
    try:
        with pytest.raises(MediaError) as caught:
            await supervisor.stats()
        assert (caught.value.code, caught.value.status) == ("media_unavailable", 503)
    finally:
        started = time.monotonic()
        await supervisor.stop()
        assert time.monotonic() - started < 3
    exits = [record for record in caplog.records if record.getMessage() == "media worker exited; restarting it"]
    assert exits and all(getattr(record, "exit_code", None) == 1 for record in exits)
    assert [getattr(record, "restart_in_seconds", None) for record in exits] == list(BACKOFF[1:len(exits) + 1])


async def test_the_real_media_service_in_a_worker() -> None:
    """media.rooms.MediaService, unreplaced: stats and a refusal come back across the process boundary."""
    supervisor = MediaSupervisor(MediaSettings(), timeout=10)
    await supervisor.start()
    try:
        assert await supervisor.stats() == {"rooms": {}, "sessions": 0}
        with pytest.raises(MediaError) as caught:
            await supervisor.request_keyframe("empty-room")
        assert (caught.value.code, caught.value.status) == ("not_live", 404)
    finally:
        await supervisor.stop()
    assert supervisor.last_exit_code == 0


# --- several workers behind one router --------------------------------------------------------------------------


async def test_router_pins_rooms_to_workers() -> None:
    router = MediaRouter.create(MediaSettings(workers=2), service=FAKE, timeout=5)
    events = record(router)
    await router.start()
    try:
        rooms: dict[int, str] = {}
        for n in range(100):
            rooms.setdefault(router.workers.index(router.worker_for(f"room-{n}")), f"room-{n}")
        assert set(rooms) == {0, 1}
        for index, room in rooms.items():
            await router.open_publisher(room, f"host-{index}", "offer")
            await router.open_viewer(room, f"fan-{index}", "offer")
        per_worker = [await worker.stats() for worker in router.workers]
        assert [set(stats["rooms"]) for stats in per_worker] == [{rooms[0]}, {rooms[1]}]
        assert per_worker[0]["pid"] != per_worker[1]["pid"]
        total = await router.stats()
        assert total["sessions"] == 4 and set(total["rooms"]) == {rooms[0], rooms[1]}
        await router.request_keyframe(rooms[1])
        assert await router.close_session("fan-1") is True
        assert await router.close_session("fan-1") is False
        await until(lambda: len([e for e in events if e.type == "track.up"]) == 4)
        await router.check()
    finally:
        await router.stop()


# --- the server, as run_server.py runs it ---------------------------------------------------------------------


async def _ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def _until_ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    for _attempt in range(150):
        status, body = await _ready(http, url)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    return status, body


async def test_server_survives_a_killed_worker(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await _until_ready(http, server.url)
            assert status == 200 and body["checks"]["media"] == "ok"
            serving = server.wait_for_log("media worker serving")  # logged by the worker itself
            pid = serving["pid"]
            assert serving["logger"] == "media.worker" and serving["media_worker"] == 0
            assert server.wait_for_log("media worker ready")["pid"] == pid  # and by its supervisor
            mark = len(server.logs())
            os.kill(pid, signal.SIGKILL)
            restarted = server.wait_for_log("media worker restarted", after=mark)
            assert restarted["pid"] != pid
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 200
            assert await _until_ready(http, server.url) == (200, {"status": "ready",
                                                                   "checks": {"database": "ok", "media": "ok"}})
    finally:
        assert server.stop() == 0
    assert all(not entry.get("not_json") for entry in server.logs())
    exits = [entry for entry in server.logs() if entry.get("msg") == "media worker exited; restarting it"]
    assert [entry["exit_code"] for entry in exits] == [-signal.SIGKILL]
    assert server.logs()[-1]["msg"] == "stopped"


def _exited(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie nobody reaps has exited all the same


def test_workers_end_with_a_killed_server(tmp_path: Path) -> None:
    """No orphan: a worker whose web process died reads end-of-stream on its channel and exits."""
    server = ServerProcess(tmp_path).start()
    pid = server.wait_for_log("media worker serving")["pid"]
    server.signal(signal.SIGKILL)
    assert server.process is not None and server.process.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _exited(pid)
    assert server.logs()[-1]["msg"] == "media worker stopped"
