"""WHIP (RFC 9725) and WHEP over HTTP against the real app and a real media worker, with aiortc peers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection

from accounts import create_user
from accounts.stream_keys import rotate_stream_key
from config import Secrets, Settings, apply_overrides
from media.codecs import VP8
from rooms import create_room
from tests.api_client import PASSWORD, SECRET, Client
from tests.media_peers import CounterTrack, answer, new_viewer, offer, veth_address
from web.app import build_app
from web.middleware import CONFIG
from web.runtime import RUNTIME

pytestmark = pytest.mark.timeout(120)
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "media.ice.host_addresses": [veth_address()], "media.ice.stun_urls": ["stun:stun.example.test:3478"],
        "rooms.end_grace_seconds": 0, "server.cors_origins": ["https://studio.example"]})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as client:
        yield client


async def _host(client: Client, email: str, room: str | None = None, role: str = "host") -> str:
    """A host account (with a room of its own when `room` is given); returns its stream key."""
    async with client.server.app[RUNTIME].db.write() as session:
        user = await create_user(session, email, PASSWORD, role)
        if room is not None:
            await create_room(session, user, room, room.title())
        return await rotate_stream_key(session, user.id)


def _publisher() -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([VP8])
    return pc


async def _whip(client: Client, room: str, key: str | None, body: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return await client.post(f"/whip/{room}", data=body, headers={**SDP, **auth, **(headers or {})})


async def _error(response) -> str:  # type: ignore[no-untyped-def]
    body = await response.json()
    return str(body["error"]["code"])


async def test_whip_refusals(edge: Client) -> None:
    key = await _host(edge, "ann@example.com", "ann")
    stranger = await _host(edge, "bob@example.com")
    pc = _publisher()
    sdp = await offer(pc)
    response = await _whip(edge, "ann", None, sdp)
    assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert (await _whip(edge, "ann", "psk_wrong", sdp)).status == 401
    response = await _whip(edge, "ann", stranger, sdp)
    assert response.status == 403 and await _error(response) == "not_room_publisher"
    response = await edge.post("/whip/ann", data=sdp, headers={"Content-Type": "text/plain",
                                                                "Authorization": f"Bearer {key}"})
    assert response.status == 415
    assert (await _whip(edge, "ann", key, "v=0\r\ngarbage")).status == 400
    assert (await _whip(edge, "ann", key, "hello")).status == 400
    assert (await _whip(edge, "ann", key, "v=0\r\n" + "a=x\r\n" * 20000)).status == 413
    vp9_only = sdp.replace("VP8/90000", "VP9/90000")
    response = await _whip(edge, "ann", key, vp9_only)
    assert response.status == 422 and await _error(response) == "no_forwardable_codec"
    three = RTCPeerConnection()
    for _ in range(3):  # a camera and a screen share are fine; a third video is not
        three.addTransceiver(CounterTrack(), direction="sendonly")
    response = await _whip(edge, "ann", key, await offer(three))
    assert response.status == 400 and await _error(response) == "too_many_tracks"
    for peer in (pc, three):
        await peer.close()


async def test_publish_view_and_end(edge: Client) -> None:
    key = await _host(edge, "ann@example.com", "ann")
    preflight = await edge.options("/whip/ann", headers={"Origin": "https://studio.example",
                                                          "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204 and preflight.headers["Accept-Post"] == "application/sdp"
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    not_live = await edge.post("/whep/ann", data=await offer(new_viewer().pc), headers=SDP)
    assert not_live.status == 404 and await _error(not_live) == "not_live"

    publisher = _publisher()
    response = await _whip(edge, "ann", key, await offer(publisher), {"Origin": "https://studio.example"})
    assert response.status == 201, await response.text()
    assert response.content_type == "application/sdp"
    location = response.headers["Location"]
    assert location.startswith("/whip/ann/") and response.headers["ETag"] == f'"{location.rsplit("/", 1)[1]}"'
    assert response.headers.getall("Link") == ['<stun:stun.example.test:3478>; rel="ice-server"']
    assert "Location" in response.headers["Access-Control-Expose-Headers"]
    await answer(publisher, await response.text())
    second = _publisher()  # another host in the room while co-hosting is off: refused
    edge.server.app[CONFIG].current = apply_overrides(edge.server.app[CONFIG].current, {"rooms.cohosting": False})
    admin_key = await _host(edge, "root@example.com", role="admin")
    response = await _whip(edge, "ann", admin_key, await offer(second))
    assert response.status == 409 and await _error(response) == "publisher_exists"

    live = await (await edge.get("/api/shows?status=live")).json()
    assert [show["room_slug"] for show in live["shows"]] == ["ann"]

    viewer = new_viewer()
    watched = await edge.post("/whep/ann", data=await offer(viewer.pc), headers=SDP)
    assert watched.status == 201 and watched.headers["Location"].startswith("/whep/ann/")
    await answer(viewer.pc, await watched.text())
    async with asyncio.timeout(20):
        while len(viewer.counters) < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert viewer.counters == list(range(viewer.counters[0], viewer.counters[0] + len(viewer.counters)))

    trickle = {"Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {key}"}
    assert (await edge.patch(location, data="a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n",
                             headers=trickle)).status == 204
    restart = await edge.patch(location, data="a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n",
                               headers=trickle)
    assert restart.status == 422
    viewer_location = watched.headers["Location"]
    assert (await edge.delete(viewer_location)).status == 200
    assert (await edge.delete(viewer_location)).status == 404
    assert (await edge.delete(location)).status == 401
    assert (await edge.delete(location, headers={"Authorization": f"Bearer {key}"})).status == 200
    assert (await edge.delete(location, headers={"Authorization": f"Bearer {key}"})).status == 404
    async with asyncio.timeout(10):  # end_grace_seconds is 0: the job runner ends the show
        while (await (await edge.get("/api/shows?status=live")).json())["shows"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    for peer in (publisher, second, viewer.pc):
        await peer.close()


async def test_create_on_publish(edge: Client) -> None:
    key = await _host(edge, "cy@example.com")
    publisher = _publisher()
    response = await _whip(edge, "brand-new", key, await offer(publisher))
    assert response.status == 201
    room = await (await edge.get("/api/rooms/brand-new")).json()
    assert room["slug"] == "brand-new"
    await publisher.close()


async def test_worker_killed_mid_show(edge: Client) -> None:
    """The server survives its media worker dying mid-show; the host publishes again and the show resumes."""
    key = await _host(edge, "ann@example.com", "ann")
    publisher = _publisher()
    first = await _whip(edge, "ann", key, await offer(publisher))
    assert first.status == 201
    await answer(publisher, await first.text())
    show = (await (await edge.get("/api/shows?status=live")).json())["shows"][0]
    runtime = edge.server.app[RUNTIME]
    holder = edge.server.app[CONFIG]
    holder.current = apply_overrides(holder.current, {"rooms.end_grace_seconds": 30})  # as a reload would
    worker = runtime.media.workers[0]  # type: ignore[union-attr]
    old_pid = worker.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    async with asyncio.timeout(20):
        while worker.pid in (None, old_pid) or (await edge.get("/readyz")).status != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await publisher.close()
    again = _publisher()
    second = await _whip(edge, "ann", key, await offer(again))
    assert second.status == 201, await second.text()
    await answer(again, await second.text())
    viewer = new_viewer()
    watched = await edge.post("/whep/ann", data=await offer(viewer.pc), headers=SDP)
    assert watched.status == 201
    await answer(viewer.pc, await watched.text())
    async with asyncio.timeout(20):
        while len(viewer.counters) < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    resumed = (await (await edge.get("/api/shows?status=live")).json())["shows"]
    assert [s["id"] for s in resumed] == [show["id"]], "the show should resume within the grace period"
    await again.close()
    await viewer.close()


async def test_the_same_host_republishing_replaces_its_session(edge: Client) -> None:
    key = await _host(edge, "ann@example.com", "ann")
    first = _publisher()
    response = await _whip(edge, "ann", key, await offer(first))
    assert response.status == 201
    stale = response.headers["Location"]
    again = _publisher()
    response = await _whip(edge, "ann", key, await offer(again))  # OBS restarted: the old session is replaced
    assert response.status == 201
    assert (await edge.delete(stale, headers={"Authorization": f"Bearer {key}"})).status == 404
    assert (await edge.delete(response.headers["Location"], headers={"Authorization": f"Bearer {key}"})).status == 200
    for peer in (first, again):
        await peer.close()
