"""The live-room Socket.IO namespace `/live`: our pages publish, watch and run the show over one socket.

Publishing and watching go through the same functions as WHIP and WHEP (`whip.start_publishing`,
`whep.start_viewing`), so the rules cannot drift apart. Every request is acknowledged with `{"ok": true, ...}`
or `{"ok": false, "error": {code, message, field}}`; errors are mapped in one place (`_acked`).

Room events carry the room's sequence number and the server time. They go through the outbox and the
event bus (`signaling.room_feed`), so every node delivers one ordered sequence per room. A client joins
(reading the snapshot with the seq it is current to, then entering delivery with the events it missed
meanwhile), applies events with a sequence number above the snapshot's, and asks for a new snapshot when it
sees a gap or a `resync` event. The overlay (pins, sales, chat, stock) plugs in as a `RoomExtension`
(`signaling.overlay_room`). Events are documented in docs/events.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import socketio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, DomainError, Forbidden, NotFound, Unauthorized
from accounts.service import get_user
from accounts.tokens import ACCESS_COOKIE, Principal, verify_token
from accounts.user import User
from bus import Bus, Event, Resync, topic_seq
from media.api import MediaError, MediaEvent, SessionAnswer
from rooms.live import open_publisher_sessions, set_program_publisher
from rooms.service import get_room, list_shows
from rooms.values import Room, Show, can_publish
from signaling import whep, whip
from signaling.background import spawn
from signaling.edge import EdgeContext
from signaling.room_feed import RoomFeeds, live_topic, publish
from signaling.sdp_http import validate_offer
from store import Database, clock

logger = logging.getLogger(__name__)

NAMESPACE = "/live"
MEDIA_REQUESTS_PER_MINUTE = 10
"""Publish and subscribe requests per socket and minute: each one costs a peer connection in the worker."""
_WINDOW_SECONDS = 60.0
_SLUG_MAX = 64
_SESSION_ID_MAX = 64
_TRACK_NAME_MAX = 80


def topic(slug: str) -> str:
    """The Socket.IO room of a live room: the same name as its event-bus topic."""
    return f"room:{slug}"


# --- requests ----------------------------------------------------------------------------------------------


class _Request(BaseModel):
    """Unknown fields are ignored so that older servers accept newer clients."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class NoRequest(_Request):
    pass


class RoomRequest(_Request):
    room: str = Field(min_length=1, max_length=_SLUG_MAX)


class OfferRequest(RoomRequest):
    sdp: str
    """Checked by `validate_offer` (size in bytes, `v=0`), which gives the same errors as WHIP and WHEP."""


class SessionRequest(_Request):
    session_id: str = Field(min_length=1, max_length=_SESSION_ID_MAX)


TrackName = Annotated[str, Field(min_length=1, max_length=_TRACK_NAME_MAX, pattern=r"^[A-Za-z0-9_:.-]+$")]


class SubscribeRequest(OfferRequest):
    tracks: list[TrackName] | None = Field(None, max_length=8)
    """What each section of the offer receives, in order (see docs/events.md); None: the program feed."""


class RenegotiateRequest(SessionRequest):
    sdp: str
    tracks: list[TrackName] | None = Field(None, max_length=8)
    """For a viewing session, as in `subscribe`; ignored for a publishing session (sections are named by
    order: audio, camera, screen share)."""


class ProgramRequest(RoomRequest):
    session_id: str = Field(min_length=1, max_length=_SESSION_ID_MAX)


Request = TypeVar("Request", bound=_Request)
Ack = dict[str, Any]


class RateLimited(DomainError):
    """Too many expensive requests from one socket."""

    http_status = 429


class RoomExtension(Protocol):
    """What the overlay adds to the room: snapshot parts, join checks, and reactions to bus events."""

    async def snapshot(self, session: AsyncSession, room: Room, show: Show | None) -> dict[str, Any]: ...

    async def joining(self, sid: str, client: Client, room: Room) -> None:
        """Raise a DomainError to refuse the join (a banned author)."""

    async def joined(self, sid: str, client: Client, room: Room) -> None: ...

    async def left(self, sid: str, slug: str) -> None: ...

    async def commerce_event(self, slug: str, item: Event | Resync) -> None: ...

    async def room_event(self, slug: str, event: Event) -> None: ...


# --- state -------------------------------------------------------------------------------------------------


@dataclass
class Client:
    """One connected socket: who it speaks for and the media sessions it opened (closed when it leaves)."""

    principal: Principal | None
    rooms: set[str] = field(default_factory=set)
    publishing: dict[str, str] = field(default_factory=dict)
    """Publisher session id → room."""
    viewing: dict[str, str] = field(default_factory=dict)
    """Viewer session id → room."""
    seq: int = 0
    """The sequence of this socket's private events, apart from the room's so they never look like gaps."""
    window_started: float = 0.0
    window_count: int = 0


@dataclass
class RoomState:
    program: str | None = None
    """The publisher session on air, as the media worker last said."""
    reconnecting: str | None = None
    """The program session whose loss was announced with "host.reconnecting", until a feed is on air again."""
    tracks: dict[str, list[str]] = field(default_factory=dict)
    """Publisher session → the tracks it sends ("audio", "video", "screen"), as the media worker last said."""


class LiveRoom:
    """Registers the `/live` handlers on an AsyncServer and turns media and show events into room events."""

    def __init__(self, sio: socketio.AsyncServer, edge: EdgeContext, *, bus: Callable[[], Bus | None],
                 media_requests_per_minute: int = MEDIA_REQUESTS_PER_MINUTE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sio = sio
        self.edge = edge
        self.media_requests_per_minute = media_requests_per_minute
        self._monotonic = monotonic
        self._clients: dict[str, Client] = {}
        self._rooms: dict[str, RoomState] = {}
        self._owners: dict[str, str] = {}
        """Media session id → the socket that opened it."""
        self._tails: dict[str, asyncio.Task[None]] = {}
        self.extensions: list[RoomExtension] = []
        self.feeds = RoomFeeds(sio, NAMESPACE, edge.database, bus, topic, self._commerce_event, self._room_event)

    def register(self) -> None:
        self.sio.on("connect", self._connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._disconnect, namespace=NAMESPACE)
        self._on("join", RoomRequest, self._join)
        self._on("leave", RoomRequest, self._leave)
        self._on("ice_servers", NoRequest, self._ice_servers)
        self._on("publish", OfferRequest, self._publish)
        self._on("unpublish", SessionRequest, self._unpublish)
        self._on("subscribe", SubscribeRequest, self._subscribe)
        self._on("renegotiate", RenegotiateRequest, self._renegotiate)
        self._on("unsubscribe", SessionRequest, self._unsubscribe)
        self._on("set_program", ProgramRequest, self._set_program)

    # --- plumbing ------------------------------------------------------------------------------------------

    def _on(self, event: str, model: type[Request],
            handler: Callable[[str, Client, Request], Awaitable[Ack]]) -> None:
        async def handle(sid: str, data: Any = None) -> Ack:
            return await self._acked(event, sid, model, handler, data)

        self.sio.on(event, handle, namespace=NAMESPACE)

    async def _acked(self, event: str, sid: str, model: type[Request],
                     handler: Callable[[str, Client, Request], Awaitable[Ack]], data: Any) -> Ack:
        """The one place where a request is validated and any failure becomes an error ack."""
        try:
            client = self._clients.get(sid)
            if client is None:
                raise Unauthorized("not_connected", "the socket is not connected")
            request = model.model_validate({} if data is None and model is NoRequest else data)
            return {"ok": True, **await handler(sid, client, request)}
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or None
            return _error("invalid", f"{where or 'payload'}: {first['msg']}", where)
        except DomainError as exc:
            return _error(exc.code, exc.message, exc.field)
        except MediaError as exc:
            return _error(exc.code, exc.message, exc.field)
        except Exception:
            logger.exception("live room handler failed", extra={"event": event, "sid": sid})
            return _error("internal_error", "internal error", None)

    def _state(self, slug: str) -> RoomState:
        return self._rooms.setdefault(slug, RoomState())

    def broadcast(self, slug: str, event: str, payload: dict[str, Any]) -> asyncio.Task[None]:
        """Send a room event: written to the outbox (in its own transaction), numbered by the bus, and
        delivered by every node to its sockets in the room (`room_feed`). Writes are chained per room, so
        events broadcast one after the other get their sequence numbers in that order."""
        previous = self._tails.get(slug)

        async def write() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            async with self.database.write() as session:
                await publish(session, slug, event, payload)

        task = spawn(write())
        self._tails[slug] = task
        task.add_done_callback(lambda done: self._tails.pop(slug) if self._tails.get(slug) is done else None)
        return task

    @property
    def database(self) -> Database:
        return self.edge.database()

    async def _commerce_event(self, slug: str, item: Event | Resync) -> None:
        for extension in self.extensions:
            await extension.commerce_event(slug, item)

    async def _room_event(self, slug: str, event: Event) -> None:
        for extension in self.extensions:
            await extension.room_event(slug, event)

    async def tell(self, sid: str, event: str, payload: dict[str, Any]) -> None:
        await self._tell(sid, event, payload)

    def client(self, sid: str) -> Client | None:
        return self._clients.get(sid)

    async def _tell(self, sid: str, event: str, payload: dict[str, Any]) -> None:
        """A private event for one socket, numbered in its own sequence."""
        client = self._clients.get(sid)
        if client is None:
            return
        client.seq += 1
        await self.sio.emit(event, {**payload, "seq": client.seq, "server_time_ms": clock.now_ms()}, to=sid,
                            namespace=NAMESPACE, ignore_queue=True)  # the socket is ours: no Redis round trip

    def _count_media_request(self, client: Client) -> None:
        now = self._monotonic()
        if now - client.window_started >= _WINDOW_SECONDS:
            client.window_started, client.window_count = now, 0
        client.window_count += 1
        if client.window_count > self.media_requests_per_minute:
            raise RateLimited("rate_limited", f"at most {self.media_requests_per_minute} publish and subscribe "
                           "requests per minute; try again later")

    @staticmethod
    def _account(client: Client) -> int:
        """The signed-in account behind a host request; guests, anonymous viewers and expired tokens are
        refused (the token is checked at connect, so a long-lived socket must not outlive it here)."""
        principal = client.principal
        if principal is None or principal.user_id is None:
            raise Unauthorized("sign_in_required", "connect with a host's access token to do this")
        if principal.expires_at <= clock.now_ms():
            raise Unauthorized("token_expired", "the access token has expired; reconnect with a fresh one")
        return principal.user_id

    # --- connection ----------------------------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        principal = None
        if token is not None:
            if not isinstance(token, str) or not token:
                raise _refused("token_invalid", "auth.token must be an access or guest token")
            try:
                principal = verify_token(token, self.edge.secret_key())
            except Unauthorized as exc:
                raise _refused(exc.code, exc.message) from None
        else:
            principal = self._cookie_principal(environ)
        self._clients[sid] = Client(principal)

    def _cookie_principal(self, environ: dict[str, Any]) -> Principal | None:
        """A browser's access cookie, as the REST API reads it; a stale one makes an anonymous socket. Only from
        our own pages (or the configured origins): another site's page cannot borrow the cookie, which its
        WebSocket handshake would carry (cross-site WebSocket hijacking)."""
        cookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            cookie.load(str(environ.get("HTTP_COOKIE", "")))
        morsel = cookie.get(ACCESS_COOKIE)
        if morsel is None or not morsel.value:
            return None
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and urlsplit(str(origin)).netloc != environ.get("HTTP_HOST") \
                and origin not in self.edge.settings().server.cors_origins:
            return None
        try:
            return verify_token(morsel.value, self.edge.secret_key())
        except Unauthorized:
            return None

    async def _disconnect(self, sid: str, _reason: Any = None) -> None:
        client = self._clients.pop(sid, None)
        if client is None:
            return
        for slug in list(client.rooms):
            await self._left(sid, slug)
        for session_id in client.viewing:
            self._owners.pop(session_id, None)
            await self._close(session_id, publisher=False)
        for session_id in client.publishing:
            self._owners.pop(session_id, None)
            await self._close(session_id, publisher=True)

    async def _close(self, session_id: str, *, publisher: bool) -> None:
        """Cleanup that carries on past a session already gone or a worker that is restarting."""
        try:
            await self.edge.media().close_session(session_id)
        except MediaError as exc:
            logger.info("live room cleanup: media session not closed", extra={"reason": exc.code})
        if publisher:
            await whip.publisher_gone(self.edge, session_id)

    # --- requests ------------------------------------------------------------------------------------------

    async def _join(self, sid: str, client: Client, request: RoomRequest) -> Ack:
        async with self.edge.database().read() as session:
            room = await get_room(session, request.room)
        if room.guest_policy == "no_guests" and (client.principal is None or client.principal.user_id is None):
            raise Forbidden("sign_in_required", "this room is for signed-in viewers only")
        for extension in self.extensions:
            await extension.joining(sid, client, room)
        if room.slug in client.rooms:
            await self._left(sid, room.slug)
        # Subscribe first, then read the snapshot, then enter delivery with what this node delivered since
        # the snapshot's seq: nothing is missed and nothing applies twice.
        await self.feeds.acquire(room.slug)
        client.rooms.add(room.slug)
        try:
            for _attempt in range(3):
                snapshot = await self.snapshot(room.slug)
                if await self.feeds.enter(room.slug, sid, snapshot["seq"]):
                    break
        except BaseException:
            if self._clients.get(sid) is client:
                await self._left(sid, room.slug)
            raise
        if self._clients.get(sid) is not client:  # disconnected meanwhile: `_disconnect` released the feed
            await self.sio.leave_room(sid, topic(room.slug), namespace=NAMESPACE)
            raise Conflict("disconnected", "the socket disconnected")
        for extension in self.extensions:
            await extension.joined(sid, client, room)
        return {"snapshot": snapshot}

    async def _leave(self, sid: str, client: Client, request: RoomRequest) -> Ack:
        if request.room in client.rooms:
            await self._left(sid, request.room)
        return {}

    async def _left(self, sid: str, slug: str) -> None:
        """Take a socket out of a room's delivery (leave, a ban, a disconnect)."""
        client = self._clients.get(sid)
        if client is not None:  # else it disconnected, and Socket.IO took it out of its rooms
            client.rooms.discard(slug)
            await self.sio.leave_room(sid, topic(slug), namespace=NAMESPACE)
        for extension in self.extensions:
            await extension.left(sid, slug)
        await self.feeds.release(slug)

    async def remove_from_room(self, sid: str, slug: str) -> None:
        client = self._clients.get(sid)
        if client is not None and slug in client.rooms:
            await self._left(sid, slug)

    async def _ice_servers(self, sid: str, client: Client, _request: NoRequest) -> Ack:
        user = client.principal.subject if client.principal is not None else sid
        servers = self.edge.ice_servers(user)
        return {"ice_servers": [{"urls": list(s.urls), **({"username": s.username, "credential": s.credential}
                                                            if s.username is not None else {})}
                                for s in servers.servers],
                "expires_at": servers.expires_at}

    async def _publish(self, sid: str, client: Client, request: OfferRequest) -> Ack:
        user_id = self._account(client)
        offer = validate_offer(request.sdp, "sdp")
        self._count_media_request(client)

        async def identify(session: AsyncSession) -> User:
            return await get_user(session, user_id)

        answer = await whip.start_publishing(self.edge, request.room, offer, identify, "browser")
        return await self._adopt(sid, client, answer, request.room, publisher=True)

    async def _unpublish(self, sid: str, client: Client, request: SessionRequest) -> Ack:
        if client.publishing.pop(request.session_id, None) is None:
            raise NotFound("session_not_found", "this socket has no such publishing session", "session_id")
        self._owners.pop(request.session_id, None)
        await self.edge.media().close_session(request.session_id)
        await whip.publisher_gone(self.edge, request.session_id)
        return {}

    async def _subscribe(self, sid: str, client: Client, request: SubscribeRequest) -> Ack:
        if request.room not in client.rooms:
            raise Conflict("not_joined", "join the room before subscribing to it", "room")
        offer = validate_offer(request.sdp, "sdp")
        self._count_media_request(client)
        answer = await whep.start_viewing(self.edge, request.room, offer, ",".join(request.tracks or ()))
        return await self._adopt(sid, client, answer, request.room, publisher=False)

    async def _renegotiate(self, sid: str, client: Client, request: RenegotiateRequest) -> Ack:
        """A new offer on a session this socket opened: add or remove a screen share, watch other feeds."""
        if request.session_id not in client.publishing and request.session_id not in client.viewing:
            raise NotFound("session_not_found", "this socket has no such media session", "session_id")
        offer = validate_offer(request.sdp, "sdp")
        self._count_media_request(client)
        answer = await self.edge.media().renegotiate(request.session_id, offer, ",".join(request.tracks or ()))
        return {"session_id": answer.session_id, "sdp": answer.sdp, "codecs": answer.codecs}

    async def _adopt(self, sid: str, client: Client, answer: SessionAnswer, room: str, publisher: bool) -> Ack:
        """Make a new media session the socket's own, or close it if the socket left while it was opened."""
        if self._clients.get(sid) is not client:
            await self._close(answer.session_id, publisher=publisher)
            raise Conflict("disconnected", "the socket disconnected")
        (client.publishing if publisher else client.viewing)[answer.session_id] = room
        self._owners[answer.session_id] = sid
        return {"session_id": answer.session_id, "sdp": answer.sdp, "codecs": answer.codecs}

    async def _unsubscribe(self, sid: str, client: Client, request: SessionRequest) -> Ack:
        if client.viewing.pop(request.session_id, None) is None:
            raise NotFound("session_not_found", "this socket has no such viewing session", "session_id")
        self._owners.pop(request.session_id, None)
        await self.edge.media().close_session(request.session_id)
        return {}

    async def _set_program(self, sid: str, client: Client, request: ProgramRequest) -> Ack:
        user_id = self._account(client)
        async with self.edge.database().write() as session:
            user = await get_user(session, user_id)
            room = await get_room(session, request.room)
            if not can_publish(user, room):
                raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins choose the "
                                "program feed")
            await set_program_publisher(session, room, request.session_id)
            # Inside the transaction: if the worker refuses, the database keeps the old choice too.
            await self.edge.media().set_program_feed(room.slug, request.session_id)
        changed = self.program_on_air(room.slug, request.session_id)
        if changed is not None:
            await changed
        return {"program": request.session_id}

    # --- what the room looks like --------------------------------------------------------------------------

    async def snapshot(self, slug: str) -> dict[str, Any]:
        """Everything a client needs to render the room, with the sequence number it is current to."""
        state = self._state(slug)
        extra: dict[str, Any] = {}
        async with self.edge.database().read() as session:
            seq = await topic_seq(session, live_topic(slug))
            room = await get_room(session, slug)
            show, publishers = await self._on_air(session, room)
            for extension in self.extensions:
                extra.update(await extension.snapshot(session, room, show))
        ids = {p["session_id"] for p in publishers}
        program = state.program if state.program in ids else None
        if program is None and room.program_publisher_id in ids:
            program = room.program_publisher_id
        return {"room": slug, "title": room.title, "live": show is not None,
                "show_id": show.id if show is not None else None, "program": program, "publishers": publishers,
                "reconnecting": state.reconnecting is not None and show is not None,
                **extra, "server_time_ms": clock.now_ms(), "seq": seq}

    async def _on_air(self, session: AsyncSession, room: Room) -> tuple[Show | None, list[dict[str, Any]]]:
        tracks = self._state(room.slug).tracks
        show = await live_show(session, room)
        if show is None:
            return None, []
        publishers = [{"session_id": p.id, "user_id": p.user_id, "kind": p.kind, "started_at": p.started_at,
                       "tracks": tracks.get(p.id, [])}
                      for p in await open_publisher_sessions(session) if p.show_id == show.id]
        return show, sorted(publishers, key=lambda p: (p["started_at"], p["session_id"]))

    # --- hooks from the media event listener and the show-ending job ---------------------------------------

    def program_on_air(self, slug: str, session_id: str) -> asyncio.Task[None] | None:
        """A publisher became the program feed (the worker said so, or the host chose it): "host.back" if
        the room was told its host was reconnecting, then "program.changed". None if nothing changed."""
        state = self._state(slug)
        if state.program == session_id:
            return None
        previous, state.program = state.program, session_id
        if state.reconnecting is not None:
            dropped, state.reconnecting = state.reconnecting, None
            self.broadcast(slug, "host.back", {"program": session_id, "previous": dropped})
        return self.broadcast(slug, "program.changed", {"program": session_id, "previous": previous})

    def media_event(self, event: MediaEvent) -> None:
        """Keep sockets' session bookkeeping in step with the worker (called for every media event)."""
        if event.type in ("track.up", "tracks.changed") and event.room and event.session_id:
            if "tracks" in event.data:
                self._state(event.room).tracks[event.session_id] = list(event.data["tracks"])
            if event.type == "tracks.changed":
                self.broadcast(event.room, "tracks.changed", {"session_id": event.session_id,
                                                              "tracks": list(event.data.get("tracks", []))})
            elif event.data.get("program"):
                self.program_on_air(event.room, event.session_id)
        elif event.type == "session.closed" and event.session_id is not None:
            if event.room is not None and event.kind == "publisher":
                self._state(event.room).tracks.pop(event.session_id, None)
            sid = self._owners.pop(event.session_id, None)
            client = self._clients.get(sid) if sid is not None else None
            if sid is not None and client is not None:
                client.viewing.pop(event.session_id, None)
                client.publishing.pop(event.session_id, None)
                spawn(self._tell(sid, "session.closed", {"session_id": event.session_id,
                                                               "kind": event.kind, "room": event.room}))
        elif event.type == "session.connected" and event.kind == "publisher" and event.room:
            spawn(self.publishers_changed(event.room))

    async def publisher_closed(self, slug: str, session_id: str) -> None:
        """Called once the database knows a publisher left. If it was on air, no other feed took over and
        the show is still live (its grace period runs), viewers hear "host.reconnecting"."""
        await self.publishers_changed(slug)
        state = self._state(slug)
        if state.program != session_id:
            return
        async with self.edge.database().read() as session:
            room = await get_room(session, slug)
            show, _publishers = await self._on_air(session, room)
        if state.program != session_id:  # another feed went on air meanwhile
            return
        state.program = None
        if show is not None:
            state.reconnecting = session_id
            grace_ms = self.edge.settings().rooms.end_grace_seconds * 1000
            self.broadcast(slug, "host.reconnecting", {"session_id": session_id, "show_id": show.id,
                                                       "grace_ms": grace_ms})

    async def publishers_changed(self, slug: str) -> None:
        async with self.edge.database().read() as session:
            room = await get_room(session, slug)
            show, publishers = await self._on_air(session, room)
        if show is not None:
            self.broadcast(slug, "publishers.changed", {"show_id": show.id, "publishers": publishers})

    async def media_restarted(self) -> None:
        """A restarted worker holds no sessions: every feed that was on air is lost."""
        for slug, state in list(self._rooms.items()):
            if state.program is not None:
                await self.publisher_closed(slug, state.program)

    async def show_ended(self, show: Show) -> None:
        state = self._state(show.room_slug)
        state.program = state.reconnecting = None
        await self.broadcast(show.room_slug, "show.ended", {"show_id": show.id, "ended_at": show.ended_at})



async def live_show(session: AsyncSession, room: Room) -> Show | None:
    """The room's live show, if it has one (at most one is live at a time)."""
    live = await list_shows(session, "live", 1, room_id=room.id)
    return live[0] if live else None


def _error(code: str, message: str, field: str | None) -> Ack:
    return {"ok": False, "error": {"code": code, "message": message, "field": field}}


def _refused(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code, "message": message})
