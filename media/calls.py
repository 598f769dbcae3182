"""The MediaControl calls as plain data: which methods cross the wire, with which parameters, and how their
results are encoded in the worker and rebuilt in the web process. Both sides share this one table, so a
call cannot drift between them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import Any

from media.api import MediaControl, MediaError, SessionAnswer

METHODS: dict[str, tuple[str, ...]] = {
    "open_publisher": ("room", "session_id", "offer_sdp"),
    "open_viewer": ("room", "session_id", "offer_sdp", "tracks"),
    "renegotiate": ("session_id", "offer_sdp", "tracks"),
    "close_session": ("session_id",),
    "request_keyframe": ("room",),
    "set_program_feed": ("room", "session_id"),
    "set_keyframe_cadence": ("room", "seconds"),
    "end_room": ("room",),
    "open_tap": ("room", "tap_id", "host", "port"),
    "close_tap": ("tap_id",),
    "stats": (),
}
"""Method name → its parameters, every one a string."""


def check_params(method: str, params: dict[str, Any]) -> None:
    """MediaError 400 "bad_request" unless `params` are exactly the method's string parameters."""
    expected = METHODS.get(method)
    if expected is None:
        raise MediaError("bad_request", f"unknown media method {method[:64]!r}")
    if set(params) != set(expected) or not all(isinstance(value, str) for value in params.values()):
        raise MediaError("bad_request", f"{method} takes string parameters {', '.join(expected) or '(none)'}")


async def dispatch(service: MediaControl, method: str, params: dict[str, Any]) -> Any:
    """Run one call on the in-worker service; the result comes back as JSON-able data."""
    check_params(method, params)
    match method:
        case "open_publisher":
            return asdict(await service.open_publisher(params["room"], params["session_id"], params["offer_sdp"]))
        case "open_viewer":
            return asdict(await service.open_viewer(params["room"], params["session_id"], params["offer_sdp"],
                                                    params["tracks"]))
        case "renegotiate":
            return asdict(await service.renegotiate(params["session_id"], params["offer_sdp"], params["tracks"]))
        case "close_session":
            return await service.close_session(params["session_id"])
        case "request_keyframe":
            await service.request_keyframe(params["room"])
            return None
        case "set_program_feed":
            await service.set_program_feed(params["room"], params["session_id"])
            return None
        case "set_keyframe_cadence":
            await service.set_keyframe_cadence(params["room"], params["seconds"])
            return None
        case "end_room":
            await service.end_room(params["room"])
            return None
        case "open_tap":
            return await service.open_tap(params["room"], params["tap_id"], params["host"], params["port"])
        case "close_tap":
            return await service.close_tap(params["tap_id"])
        case _:
            return await service.stats()


def _bad_response(method: str) -> MediaError:
    return MediaError("media_bad_response", f"the media worker answered {method} with malformed data", 502)


class RemoteMedia(ABC):
    """MediaControl in the web process, each method one `call` to wherever the media service runs."""

    @abstractmethod
    async def call(self, method: str, params: dict[str, str]) -> Any:
        """Send one call and return its JSON result; raises MediaError (a refusal, or 503 when unreachable)."""

    async def open_publisher(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        params = {"room": room, "session_id": session_id, "offer_sdp": offer_sdp}
        return _answer("open_publisher", await self.call("open_publisher", params))

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        params = {"room": room, "session_id": session_id, "offer_sdp": offer_sdp, "tracks": tracks}
        return _answer("open_viewer", await self.call("open_viewer", params))

    async def renegotiate(self, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        params = {"session_id": session_id, "offer_sdp": offer_sdp, "tracks": tracks}
        return _answer("renegotiate", await self.call("renegotiate", params))

    async def close_session(self, session_id: str) -> bool:
        result = await self.call("close_session", {"session_id": session_id})
        if not isinstance(result, bool):
            raise _bad_response("close_session")
        return result

    async def request_keyframe(self, room: str) -> None:
        await self.call("request_keyframe", {"room": room})

    async def set_program_feed(self, room: str, session_id: str) -> None:
        await self.call("set_program_feed", {"room": room, "session_id": session_id})

    async def set_keyframe_cadence(self, room: str, seconds: str) -> None:
        await self.call("set_keyframe_cadence", {"room": room, "seconds": seconds})

    async def end_room(self, room: str) -> None:
        await self.call("end_room", {"room": room})

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        result = await self.call("open_tap", {"room": room, "tap_id": tap_id, "host": host, "port": port})
        if not isinstance(result, list) or not all(isinstance(codec, str) for codec in result):
            raise _bad_response("open_tap")
        return result

    async def close_tap(self, tap_id: str) -> bool:
        result = await self.call("close_tap", {"tap_id": tap_id})
        if not isinstance(result, bool):
            raise _bad_response("close_tap")
        return result

    async def stats(self) -> dict[str, Any]:
        result = await self.call("stats", {})
        if not isinstance(result, dict):
            raise _bad_response("stats")
        return result


def _answer(method: str, result: Any) -> SessionAnswer:
    if (not isinstance(result, dict) or set(result) != {"session_id", "sdp", "codecs"}
            or not isinstance(result["session_id"], str) or not isinstance(result["sdp"], str)
            or not isinstance(result["codecs"], list) or not all(isinstance(c, str) for c in result["codecs"])):
        raise _bad_response(method)
    return SessionAnswer(result["session_id"], result["sdp"], result["codecs"])
