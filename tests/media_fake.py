"""A stand-in MediaService for process-model tests, served by a real worker (`--service
tests.media_fake:FakeMediaService`). Its offers are instructions: "sleep:2" answers after two seconds,
"refuse:code:409[:field]" raises that MediaError, "crash" raises a plain exception, "exit" kills the worker,
anything else answers at once and announces a track."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from config.schema import MediaSettings
from media.api import MediaError, MediaEvent, SessionAnswer


class FakeMediaService:
    def __init__(self, settings: MediaSettings, emit: Callable[[MediaEvent], None]) -> None:
        self.settings = settings
        self.emit = emit
        self.sessions: dict[str, str] = {}
        self.calls = 0

    async def open_publisher(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        return await self._open(room, session_id, offer_sdp, "publisher")

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        return await self._open(room, session_id, offer_sdp, "viewer")

    async def renegotiate(self, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        if session_id not in self.sessions:
            raise MediaError("session_not_found", f"no media session {session_id!r}", 404, "session_id")
        return SessionAnswer(session_id, f"answer to {offer_sdp}", ["video/VP8"])

    async def _open(self, room: str, session_id: str, offer: str, kind: str) -> SessionAnswer:
        self.calls += 1
        verb, _, argument = offer.partition(":")
        if verb == "sleep":
            await asyncio.sleep(float(argument))
        elif verb == "refuse":
            code, status, *field = argument.split(":")
            raise MediaError(code, f"refused: {code}", int(status), field[0] if field else None)
        elif verb == "crash":
            raise RuntimeError("the fake service broke")
        elif verb == "exit":
            os._exit(3)
        self.sessions[session_id] = room
        self.emit(MediaEvent("track.up", room=room, session_id=session_id,
                             kind="publisher" if kind == "publisher" else "viewer", data={"track": "video"}))
        return SessionAnswer(session_id, f"answer to {offer}", ["video/VP8"])

    async def close_session(self, session_id: str) -> bool:
        room = self.sessions.pop(session_id, None)
        if room is not None:
            self.emit(MediaEvent("session.closed", room=room, session_id=session_id))
        return room is not None

    async def request_keyframe(self, room: str) -> None:
        if room not in self.sessions.values():
            raise MediaError("not_live", f"room {room!r} is not live", 404)

    async def set_program_feed(self, room: str, session_id: str) -> None:
        return None

    async def end_room(self, room: str) -> None:
        return None

    async def set_keyframe_cadence(self, room: str, seconds: str) -> None:
        return None

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        return ["video/VP8"]

    async def close_tap(self, tap_id: str) -> bool:
        return False

    async def stats(self) -> dict[str, Any]:
        rooms: dict[str, Any] = {}
        for room in self.sessions.values():
            rooms.setdefault(room, {"sessions": 0})["sessions"] += 1
        return {"rooms": rooms, "sessions": len(self.sessions), "pid": os.getpid(), "calls": self.calls,
                "ice_ports": [self.settings.ice.port_min, self.settings.ice.port_max]}

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self.close_session(session_id)
