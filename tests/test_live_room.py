"""The `/live` Socket.IO namespace against the real app and a real media worker: Socket.IO clients on the
WebSocket transport, aiortc peers publishing and decoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient, TestServer
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from accounts import create_user
from accounts.service import get_user
from accounts.tokens import ACCESS_COOKIE, issue_access_token, issue_guest_token
from config import Secrets, Settings, apply_overrides
from media.codecs import VP8
from rooms import add_cohost, create_room, get_room
from rooms.live import open_publisher_sessions
from signaling.live_room import MEDIA_REQUESTS_PER_MINUTE, NAMESPACE
from store import clock
from tests.api_client import PASSWORD, SECRET, Client
from tests.media_peers import CounterTrack, Viewer, answer, new_viewer, offer, read_counter, veth_address
from web.app import build_app
from web.middleware import CONFIG
from web.runtime import RUNTIME

pytestmark = pytest.mark.timeout(120)
WAIT = 20.0
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "media.ice.host_addresses": [veth_address()], "rooms.end_grace_seconds": 30})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as client:
        yield client


class Live:
    """A Socket.IO client of the live-room namespace that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.refusal: Any = None
        self.sio.on("*", self._record, namespace=NAMESPACE)
        self.sio.on("connect_error", self._refused, namespace=NAMESPACE)

    async def _record(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    async def _refused(self, data: Any) -> None:
        self.refusal = data

    async def connect(self, edge: Client, token: str | None = None, headers: dict[str, str] | None = None) -> None:
        url = str(edge.server.make_url("/"))
        await self.sio.connect(url, auth={"token": token} if token is not None else None, headers=headers or {},
                               transports=["websocket"], namespaces=[NAMESPACE], wait_timeout=10)

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, namespace=NAMESPACE, timeout=WAIT)
        return ack

    async def ok(self, event: str, data: Any = None) -> dict[str, Any]:
        ack = await self.call(event, data)
        assert ack["ok"] is True, ack
        return ack

    async def error(self, event: str, data: Any = None) -> dict[str, Any]:
        ack = await self.call(event, data)
        assert ack["ok"] is False and set(ack["error"]) == {"code", "message", "field"}, ack
        error: dict[str, Any] = ack["error"]
        return error

    async def wait_for(self, event: str, where: Callable[[dict[str, Any]], bool] = lambda _d: True) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await asyncio.sleep(0.02)

    def room_events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, data) for name, data in self.events if "seq" in data and name != "session.closed"]

    async def close(self) -> None:
        await self.sio.disconnect()


async def _account(edge: Client, email: str, role: str = "host", room: str | None = None) -> tuple[int, str]:
    """A new account (owning `room` when given); returns its id and an access token."""
    async with edge.server.app[RUNTIME].db.write() as session:
        user = await create_user(session, email, PASSWORD, role)
        if room is not None:
            await create_room(session, user, room, room.title())
    return user.id, issue_access_token(user, SECRET, 15)


async def _connected(edge: Client, token: str | None = None) -> Live:
    live = Live()
    await live.connect(edge, token)
    return live


def _publisher(start: int = 0) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterTrack(start), direction="sendonly").setCodecPreferences([VP8])
    return pc


async def _publish(live: Live, room: str, start: int = 0) -> tuple[RTCPeerConnection, str]:
    pc = _publisher(start)
    ack = await live.ok("publish", {"room": room, "sdp": await offer(pc)})
    await answer(pc, ack["sdp"])
    return pc, str(ack["session_id"])


async def _subscribe(live: Live, room: str) -> tuple[Viewer, str]:
    viewer = new_viewer()
    ack = await live.ok("subscribe", {"room": room, "sdp": await offer(viewer.pc)})
    await answer(viewer.pc, ack["sdp"])
    return viewer, str(ack["session_id"])


async def _decodes(viewer: Viewer, frames: int, at_least: int = 0) -> None:
    """Wait until `viewer` decoded `frames` more frames whose counters are at least `at_least`."""
    async with asyncio.timeout(WAIT):
        while sum(1 for c in viewer.counters if c >= at_least) < frames:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_connect_join_and_refusals(edge: Client) -> None:
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    _bob_id, bob = await _account(edge, "bob@example.com")
    _vic_id, vic = await _account(edge, "vic@example.com", role="viewer")
    refused = Live()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(edge, "not-a-token")
    assert refused.refusal["data"]["code"] == "token_invalid", refused.refusal

    anonymous = await _connected(edge)
    ack = await anonymous.ok("join", {"room": "ann"})
    snapshot = ack["snapshot"]
    assert snapshot["room"] == "ann" and snapshot["live"] is False and snapshot["show_id"] is None
    assert snapshot["program"] is None and snapshot["publishers"] == [] and snapshot["seq"] == 0
    assert abs(snapshot["server_time_ms"] - clock.now_ms()) < 5_000
    assert (await anonymous.error("join", {"room": "nobody"}))["code"] == "room_not_found"
    error = await anonymous.error("join", {"room": 5})
    assert error["code"] == "invalid" and error["field"] == "room"
    assert (await anonymous.error("join", "ann"))["code"] == "invalid"

    viewer_pc = new_viewer().pc
    view_offer = await offer(viewer_pc)
    publisher_pc = _publisher()
    publish_offer = await offer(publisher_pc)
    assert (await anonymous.error("publish", {"room": "ann", "sdp": publish_offer}))["code"] == "sign_in_required"
    guest = await _connected(edge, issue_guest_token("Gus", SECRET, 1))
    assert (await guest.error("publish", {"room": "ann", "sdp": publish_offer}))["code"] == "sign_in_required"
    for token in (bob, vic):  # a host of another room, a viewer account
        other = await _connected(edge, token)
        assert (await other.error("publish", {"room": "ann", "sdp": publish_offer}))["code"] == "not_room_publisher"
        await other.close()
    host = await _connected(edge, ann)
    error = await host.error("publish", {"room": "ann", "sdp": "v=0\r\n" + "a=x\r\n" * 14000})
    assert error["code"] == "payload_too_large" and error["field"] == "sdp"
    assert (await host.error("publish", {"room": "ann", "sdp": "hello"}))["code"] == "bad_sdp"
    assert (await host.error("set_program", {"room": "ann", "session_id": "nope"}))["code"] \
        == "publisher_session_not_found"
    assert (await anonymous.error("set_program", {"room": "ann", "session_id": "x"}))["code"] == "sign_in_required"
    assert (await host.error("unpublish", {"session_id": "nope"}))["code"] == "session_not_found"

    assert (await guest.error("subscribe", {"room": "ann", "sdp": view_offer}))["code"] == "not_joined"
    for _ in range(MEDIA_REQUESTS_PER_MINUTE):
        assert (await anonymous.error("subscribe", {"room": "ann", "sdp": view_offer}))["code"] == "not_live"
    assert (await anonymous.error("subscribe", {"room": "ann", "sdp": view_offer}))["code"] == "rate_limited"
    ice = await anonymous.ok("ice_servers")
    assert isinstance(ice["ice_servers"], list)
    for live in (anonymous, guest, host):
        await live.close()
    for pc in (viewer_pc, publisher_pc):
        await pc.close()


async def test_a_browser_signs_in_with_its_access_cookie_from_our_own_pages_only(edge: Client) -> None:
    """The socket reads the same HttpOnly cookie as the REST API, but not on a handshake from another site's
    page (which the browser would send the cookie with)."""
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    host = str(edge.server.make_url("/")).split("//")[1].rstrip("/")
    publish_offer = await offer(pc := _publisher())
    for origin, expected in ((f"http://{host}", "bad_sdp"), (None, "bad_sdp"),
                             ("https://evil.example", "sign_in_required")):
        live = Live()
        headers = {"Cookie": f"{ACCESS_COOKIE}={ann}", **({"Origin": origin} if origin else {})}
        await live.connect(edge, headers=headers)
        # Signed in, the host's request gets as far as the SDP check; anonymous, it is refused.
        assert (await live.error("publish", {"room": "ann", "sdp": "hello"}))["code"] == expected, origin
        await live.close()
    stale = Live()  # a stale cookie makes an anonymous socket, not a refused one
    await stale.connect(edge, headers={"Cookie": f"{ACCESS_COOKIE}=stale"})
    assert (await stale.error("publish", {"room": "ann", "sdp": publish_offer}))["code"] == "sign_in_required"
    await stale.close()
    await pc.close()


async def test_no_guests_room_needs_an_account(edge: Client) -> None:
    _ann_id, ann = await _account(edge, "ann@example.com", role="viewer")
    async with edge.server.app[RUNTIME].db.write() as session:
        user = await create_user(session, "own@example.com", PASSWORD, "host")
        await create_room(session, user, "members", "Members", guest_policy="no_guests")
    guest = await _connected(edge, issue_guest_token("Gus", SECRET, 1))
    assert (await guest.error("join", {"room": "members"}))["code"] == "sign_in_required"
    anonymous = await _connected(edge)
    assert (await anonymous.error("join", {"room": "members"}))["code"] == "sign_in_required"
    member = await _connected(edge, ann)
    assert (await member.ok("join", {"room": "members"}))["snapshot"]["room"] == "members"
    for live in (guest, anonymous, member):
        await live.close()


async def test_publish_over_socket_watch_over_whep_and_socket(edge: Client) -> None:
    ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    audience = await _connected(edge)
    await audience.ok("join", {"room": "ann"})
    host = await _connected(edge, ann)
    publisher, session_id = await _publish(host, "ann")
    changed = await audience.wait_for("program.changed", lambda d: d["program"] == session_id)
    assert changed["room"] == "ann" and changed["seq"] >= 1 and changed["server_time_ms"] > 0
    joined = await audience.wait_for("publishers.changed", lambda d: bool(d["publishers"]))
    assert [p["session_id"] for p in joined["publishers"]] == [session_id]

    late = await _connected(edge)
    snapshot = (await late.ok("join", {"room": "ann"}))["snapshot"]
    assert snapshot["live"] is True and snapshot["program"] == session_id and snapshot["show_id"] is not None
    assert [(p["session_id"], p["user_id"], p["kind"]) for p in snapshot["publishers"]] == \
        [(session_id, ann_id, "browser")]

    whep = new_viewer()
    response = await edge.post("/whep/ann", data=await offer(whep.pc), headers=SDP)
    assert response.status == 201, await response.text()
    await answer(whep.pc, await response.text())
    socket_viewer, _viewing = await _subscribe(audience, "ann")
    await _decodes(whep, 30)
    await _decodes(socket_viewer, 30)
    counters = socket_viewer.counters
    assert counters == list(range(counters[0], counters[0] + len(counters)))

    await host.ok("unpublish", {"session_id": session_id})
    assert (await host.error("unpublish", {"session_id": session_id}))["code"] == "session_not_found"
    reconnecting = await audience.wait_for("host.reconnecting")
    assert reconnecting["session_id"] == session_id and reconnecting["grace_ms"] == 30_000
    await audience.wait_for("publishers.changed", lambda d: d["publishers"] == [])
    seqs = [data["seq"] for _name, data in audience.room_events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for closable in (host, audience, late):
        await closable.close()
    for peer in (whep, socket_viewer):
        await peer.close()
    await publisher.close()


async def _two_hosts(edge: Client) -> tuple[tuple[Live, RTCPeerConnection, str], tuple[Live, RTCPeerConnection, str]]:
    """Ann's room with Cy as co-host, both publishing: Ann's frames count from 0, Cy's from 20,000."""
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    cy_id, cy = await _account(edge, "cy@example.com")
    async with edge.server.app[RUNTIME].db.write() as session:
        owner = await get_room(session, "ann")
        await add_cohost(session, await get_user(session, owner.owner_id), owner, cy_id)
    owner_socket, cohost_socket = await _connected(edge, ann), await _connected(edge, cy)
    owner_pc, owner_session = await _publish(owner_socket, "ann", start=0)
    cohost_pc, cohost_session = await _publish(cohost_socket, "ann", start=20_000)
    return (owner_socket, owner_pc, owner_session), (cohost_socket, cohost_pc, cohost_session)


async def test_program_switch_between_cohosts(edge: Client) -> None:
    (owner_socket, owner_pc, owner_session), (cohost_socket, cohost_pc, cohost_session) = await _two_hosts(edge)

    audience = await _connected(edge)
    snapshot = (await audience.ok("join", {"room": "ann"}))["snapshot"]
    assert snapshot["program"] == owner_session
    assert {p["session_id"] for p in snapshot["publishers"]} == {owner_session, cohost_session}
    viewer, _viewing = await _subscribe(audience, "ann")
    await _decodes(viewer, 20)
    assert viewer.counters[-1] < 20_000
    pc_before = viewer.pc

    assert (await audience.error("set_program", {"room": "ann", "session_id": cohost_session}))["code"] \
        == "sign_in_required"
    ack = await owner_socket.ok("set_program", {"room": "ann", "session_id": cohost_session})
    assert ack["program"] == cohost_session
    changed = await audience.wait_for("program.changed", lambda d: d["program"] == cohost_session)
    assert changed["previous"] == owner_session and changed["seq"] > snapshot["seq"]
    await _decodes(viewer, 20, at_least=20_000)
    assert viewer.pc is pc_before and viewer.pc.connectionState == "connected"
    switched = [c for c in viewer.counters if c >= 20_000]
    assert switched == list(range(switched[0], switched[0] + len(switched)))

    back = await cohost_socket.ok("set_program", {"room": "ann", "session_id": owner_session})  # co-hosts may
    assert back["program"] == owner_session
    await audience.wait_for("program.changed", lambda d: d["program"] == owner_session and d["seq"] > changed["seq"])
    program_events = [d for name, d in audience.events if name == "program.changed"]
    assert [d["program"] for d in program_events] == [cohost_session, owner_session]
    for live in (owner_socket, cohost_socket, audience):
        await live.close()
    for peer in (owner_pc, cohost_pc):
        await peer.close()
    await viewer.close()


async def test_host_drops_and_comes_back(edge: Client) -> None:
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    host = await _connected(edge, ann)
    first_pc, first = await _publish(host, "ann", start=0)
    audience = await _connected(edge)
    await audience.ok("join", {"room": "ann"})
    viewer, _viewing = await _subscribe(audience, "ann")
    await _decodes(viewer, 20)

    await host.close()  # the page reloads: its sessions close with the socket
    await first_pc.close()
    reconnecting = await audience.wait_for("host.reconnecting")
    assert reconnecting["session_id"] == first
    async with edge.server.app[RUNTIME].db.read() as session:
        assert await open_publisher_sessions(session) == []
    late = await _connected(edge)
    assert (await late.ok("join", {"room": "ann"}))["snapshot"]["reconnecting"] is True

    again = await _connected(edge, ann)
    second_pc, second = await _publish(again, "ann", start=40_000)
    back = await audience.wait_for("host.back")
    assert back["program"] == second and back["previous"] == first and back["seq"] > reconnecting["seq"]
    await _decodes(viewer, 20, at_least=40_000)
    assert viewer.pc.connectionState == "connected"
    snapshot = (await late.ok("join", {"room": "ann"}))["snapshot"]
    assert snapshot["reconnecting"] is False and snapshot["program"] == second
    for live in (again, audience, late):
        await live.close()
    await second_pc.close()
    await viewer.close()


async def test_disconnect_cleans_up_and_show_end_is_announced(edge: Client) -> None:
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    media = edge.server.app[RUNTIME].media
    assert media is not None
    host = await _connected(edge, ann)
    publisher, session_id = await _publish(host, "ann")
    leaving = await _connected(edge)
    await leaving.ok("join", {"room": "ann"})
    leaving_viewer, _leaving_session = await _subscribe(leaving, "ann")
    staying = await _connected(edge)
    await staying.ok("join", {"room": "ann"})
    staying_viewer, staying_session = await _subscribe(staying, "ann")
    await _decodes(leaving_viewer, 10)
    await _decodes(staying_viewer, 10)
    assert (await media.stats())["rooms"]["ann"]["viewers"] == 2

    await leaving.close()
    async with asyncio.timeout(WAIT):
        while (await media.stats())["rooms"]["ann"]["viewers"] != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    holder = edge.server.app[CONFIG]
    holder.current = apply_overrides(holder.current, {"rooms.end_grace_seconds": 0})
    await host.close()  # the only publisher leaves; with no grace period the show ends
    ended = await staying.wait_for("show.ended")
    assert ended["show_id"] is not None and ended["ended_at"] is not None
    closed = await staying.wait_for("session.closed", lambda d: d["session_id"] == staying_session)
    assert closed["kind"] == "viewer"
    async with asyncio.timeout(WAIT):
        while "ann" in (await media.stats())["rooms"]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    snapshot = (await staying.ok("join", {"room": "ann"}))["snapshot"]
    assert snapshot["live"] is False and snapshot["program"] is None and snapshot["seq"] >= ended["seq"]
    assert (await staying.error("unsubscribe", {"session_id": staying_session}))["code"] == "session_not_found"
    assert session_id
    await staying.close()
    await publisher.close()
    for peer in (leaving_viewer, staying_viewer):
        await peer.close()


class Tracks:
    """An aiortc viewer that decodes every track it is sent, keeping each track's frame counters apart."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.counters: dict[str, list[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            counters = self.counters.setdefault(track.id, [])

            async def read() -> None:
                with contextlib.suppress(MediaStreamError):
                    while True:
                        counters.append(read_counter(await track.recv()))

            self._tasks.append(asyncio.ensure_future(read()))

    def frames(self, low: int, high: int) -> int:
        return sum(1 for counters in self.counters.values() for c in counters if low <= c < high)

    async def decodes(self, frames: int, low: int, high: int) -> None:
        start = self.frames(low, high)
        async with asyncio.timeout(WAIT):
            while self.frames(low, high) < start + frames:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


CAMERA, SCREEN = (0, 50_000), (50_000, 60_000)


async def test_screen_share_added_and_removed_by_renegotiation(edge: Client) -> None:
    _ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    host = await _connected(edge, ann)
    publisher, session = await _publish(host, "ann", start=CAMERA[0])
    audience = await _connected(edge)
    await audience.ok("join", {"room": "ann"})
    viewer = Tracks()
    viewer.pc.addTransceiver("video", direction="recvonly")
    viewing = (ack := await audience.ok("subscribe", {"room": "ann", "sdp": await offer(viewer.pc)}))["session_id"]
    await answer(viewer.pc, ack["sdp"])
    await viewer.decodes(10, *CAMERA)

    # The host shares a screen: a second video section on the same connection.
    screen = publisher.addTransceiver(CounterTrack(SCREEN[0]), direction="sendonly")
    screen.setCodecPreferences([VP8])
    ack = await host.ok("renegotiate", {"session_id": session, "sdp": await offer(publisher)})
    await answer(publisher, ack["sdp"])
    changed = await audience.wait_for("tracks.changed", lambda d: "screen" in d["tracks"])
    assert changed["session_id"] == session and changed["tracks"] == ["screen", "video"]
    joined_late = (await (await _connected(edge)).ok("join", {"room": "ann"}))["snapshot"]
    assert joined_late["publishers"][0]["tracks"] == ["screen", "video"]

    # The viewer adds a section for it, naming what each section receives.
    viewer.pc.addTransceiver("video", direction="recvonly")
    ack = await audience.ok("renegotiate", {"session_id": viewing, "sdp": await offer(viewer.pc),
                                            "tracks": ["video", "screen"]})
    await answer(viewer.pc, ack["sdp"])
    await viewer.decodes(20, *SCREEN)
    await viewer.decodes(20, *CAMERA)  # the camera carries on beside it
    assert viewer.pc.connectionState == "connected" and len(viewer.counters) == 2

    # The host stops sharing: the section stays, inactive; viewers hear it and stop receiving it.
    screen.direction = "inactive"
    ack = await host.ok("renegotiate", {"session_id": session, "sdp": await offer(publisher)})
    await answer(publisher, ack["sdp"])
    await audience.wait_for("tracks.changed", lambda d: d["tracks"] == ["video"])
    await asyncio.sleep(0.5)
    shown = viewer.frames(*SCREEN)
    await viewer.decodes(20, *CAMERA)
    assert viewer.frames(*SCREEN) == shown, "the removed screen share kept flowing"

    # Refusals: someone else's session, a section that changes meaning, a bad track name, a bad offer.
    assert (await audience.error("renegotiate", {"session_id": session, "sdp": await offer(publisher)}))["code"] \
        == "session_not_found"
    swapped = await audience.error("renegotiate", {"session_id": viewing, "sdp": await offer(viewer.pc),
                                                   "tracks": ["screen", "video"]})
    assert (swapped["code"], swapped["field"]) == ("bad_tracks", "tracks")
    assert (await audience.error("renegotiate", {"session_id": viewing, "sdp": "v=0\r\n",
                                                 "tracks": ["video", "<b>"]}))["field"].startswith("tracks")
    assert (await host.error("renegotiate", {"session_id": session, "sdp": "nonsense"}))["field"] == "sdp"
    await viewer.decodes(10, *CAMERA)  # refused offers left both sessions working
    for live in (host, audience):
        await live.close()
    await publisher.close()
    await viewer.close()


async def test_viewer_watches_every_cohost_feed(edge: Client) -> None:
    (owner_socket, owner_pc, _owner), (cohost_socket, cohost_pc, cohost_session) = await _two_hosts(edge)
    audience = await _connected(edge)
    await audience.ok("join", {"room": "ann"})
    viewer = Tracks()
    for _ in range(2):
        viewer.pc.addTransceiver("video", direction="recvonly")
    assert (await audience.error("subscribe", {"room": "ann", "sdp": await offer(viewer.pc),
                                               "tracks": ["video", "feed:nobody:video"]}))["code"] == "track_not_found"
    viewer = Tracks()
    for _ in range(2):
        viewer.pc.addTransceiver("video", direction="recvonly")
    ack = await audience.ok("subscribe", {"room": "ann", "sdp": await offer(viewer.pc),
                                          "tracks": ["video", f"feed:{cohost_session}:video"]})
    await answer(viewer.pc, ack["sdp"])
    await viewer.decodes(20, 0, 20_000)  # the program (the owner)
    await viewer.decodes(20, 20_000, 40_000)  # and the co-host's own feed, on one connection
    await cohost_socket.close()  # the co-host leaves: its feed ends, the program plays on
    await audience.wait_for("publishers.changed", lambda d: len(d["publishers"]) == 1)
    await viewer.decodes(20, 0, 20_000)
    assert viewer.pc.connectionState == "connected"
    for live in (owner_socket, audience):
        await live.close()
    for peer in (owner_pc, cohost_pc):
        await peer.close()
    await viewer.close()
