"""The narrow, serialisable interface between the web process and media workers.

Every call and event is plain data (str, int, dict) so it can cross a process boundary. The web process only
ever sees SDP text and these records; packets never leave the worker. Calls are keyed by room, so several
workers (one per core) can later sit behind one router without any caller changing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

SessionKind = Literal["publisher", "viewer"]


class MediaError(Exception):
    """A refused media request (SDP, WHIP/WHEP): `code` is stable for clients, `status` the HTTP status it
    stands for, `field` the offending input when there is one."""

    def __init__(self, code: str, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "status": self.status, "field": self.field}


@dataclass(frozen=True)
class SessionAnswer:
    session_id: str
    sdp: str
    """The SDP answer, complete with ICE candidates (no trickle needed)."""
    codecs: list[str] = field(default_factory=list)
    """Negotiated MIME types, e.g. ["audio/opus", "video/H264"]."""


@dataclass(frozen=True)
class MediaEvent:
    """Something the web process should know: tracks up/down, a session gone, a worker restarted."""

    type: Literal["track.up", "track.down", "tracks.changed", "session.closed", "session.connected",
                  "worker.restarted"]
    room: str | None = None
    session_id: str | None = None
    kind: SessionKind | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MediaControl(Protocol):
    """What the web process may ask of the media layer (implemented in the worker and by the client proxy)."""

    async def open_publisher(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        """Ingest one audio and one video track into `room` (the room's program feed for now)."""
        ...

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        """Send the room's program feed to a new viewer. MediaError 404 "not_live" when nothing is published.
        `tracks` names what each offer section receives, comma-separated (see `media.sections`); "" is the
        program's audio, video and screen share in the offer's order."""
        ...

    async def renegotiate(self, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        """A new offer on an open session: a publisher adds or removes a track (a screen share), a viewer
        changes what it receives (`tracks` as for `open_viewer`)."""
        ...

    async def close_session(self, session_id: str) -> bool:
        """End a publisher or viewer session; False when it did not exist."""
        ...

    async def request_keyframe(self, room: str) -> None: ...

    async def set_program_feed(self, room: str, session_id: str) -> None:
        """Make publisher `session_id` the feed viewers see; the switch is seamless for them."""
        ...

    async def set_keyframe_cadence(self, room: str, seconds: str) -> None:
        """Ask the program feed for a keyframe every `seconds` ("0": off), for keyframe-cut consumers."""
        ...

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        """Copy the room's output RTP to UDP host:port on loopback (see media/tap.py), asking for a keyframe;
        returns the codecs. Opening `tap_id` again replaces it. MediaError 404 "not_live" without outputs."""
        ...

    async def close_tap(self, tap_id: str) -> bool:
        """Stop a tap; False when it did not exist (taps also end with their room)."""
        ...

    async def end_room(self, room: str) -> None:
        """The show is over: close every publisher and viewer session of the room."""
        ...

    async def stats(self) -> dict[str, Any]:
        """Counters per room: publishers, viewers, packets and bytes forwarded, keyframe requests."""
        ...
