"""The wire format between the web process and a media worker: one JSON object per line on a stream socket.

Web → worker: `{"init": {...}}` once, first (settings travel here, never in argv), then requests
`{"id": 1, "method": "stats", "params": {}}`. Worker → web: `{"ready": {"pid": 123}}` once the service is up,
responses `{"id": 1, "result": ...}` or `{"id": 1, "error": MediaError.to_dict()}`, and events
`{"event": MediaEvent.to_dict()}`. Lines are capped at `MAX_LINE` bytes; a line too long or not understood
is skipped whole (and answered with an error when its request id can be read), so one bad message never
desynchronises or kills either side.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, get_args, get_type_hints

from media.api import MediaError, MediaEvent

logger = logging.getLogger(__name__)

MAX_LINE = 1 << 20
"""Bytes per message, newline included: room for an SDP offer or a stats dump many times over."""

_EVENT_TYPES = frozenset(get_args(get_type_hints(MediaEvent)["type"]))


class ProtocolError(Exception):
    """A line that is not a valid message; `request_id` is set when the sender can still be answered."""

    def __init__(self, reason: str, request_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


class LineTooLong(ProtocolError):
    def __init__(self) -> None:
        super().__init__(f"message longer than {MAX_LINE} bytes, skipped")


@dataclass(frozen=True)
class Init:
    config: dict[str, Any]


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    id: int
    result: Any = None
    error: MediaError | None = None


@dataclass(frozen=True)
class Event:
    event: MediaEvent


Message = Init | Ready | Request | Response | Event


def encode(message: Message) -> bytes:
    """One line, newline included. Raises ProtocolError when it would exceed MAX_LINE or is not JSON-able."""
    body: dict[str, Any]
    match message:
        case Init(config):
            body = {"init": config}
        case Ready(pid):
            body = {"ready": {"pid": pid}}
        case Request(id_, method, params):
            body = {"id": id_, "method": method, "params": params}
        case Response(id_, result, None):
            body = {"id": id_, "result": result}
        case Response(id_, _, error) if error is not None:
            body = {"id": id_, "error": error.to_dict()}
        case Event(event):
            body = {"event": event.to_dict()}
    try:
        line = json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"not serialisable: {exc}") from exc
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def decode(line: bytes) -> Message:
    """Parse one line (without its newline). Raises ProtocolError on anything but a well-formed message."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("not a JSON object")
    if "id" in body:
        return _decode_call(body)
    if set(body) == {"event"}:
        return Event(_event(body["event"]))
    if set(body) == {"init"} and isinstance(body["init"], dict):
        return Init(body["init"])
    if set(body) == {"ready"} and isinstance(body["ready"], dict) and _is_int(body["ready"].get("pid")):
        return Ready(body["ready"]["pid"])
    raise ProtocolError(f"unknown message with keys {sorted(body)[:5]}")


def _decode_call(body: dict[str, Any]) -> Request | Response:
    request_id = body["id"]
    if not _is_int(request_id):
        raise ProtocolError("id is not an integer")
    keys = set(body) - {"id"}
    if keys == {"method", "params"} or keys == {"method"}:
        method, params = body["method"], body.get("params", {})
        if not isinstance(method, str) or not isinstance(params, dict):
            raise ProtocolError("method must be a string and params an object", request_id)
        return Request(request_id, method, params)
    if keys == {"result"}:
        return Response(request_id, result=body["result"])
    if keys == {"error"}:
        return Response(request_id, error=_error(body["error"], request_id))
    raise ProtocolError(f"call with keys {sorted(keys)[:5]}", request_id)


def _error(data: Any, request_id: int) -> MediaError:
    if (not isinstance(data, dict) or not isinstance(data.get("code"), str)
            or not isinstance(data.get("message"), str) or not _is_int(data.get("status"))
            or not isinstance(data.get("field"), str | None)):
        raise ProtocolError("error is not {code, message, status, field}", request_id)
    return MediaError(data["code"], data["message"], data["status"], data.get("field"))


def _event(data: Any) -> MediaEvent:
    if not isinstance(data, dict) or data.get("type") not in _EVENT_TYPES:
        raise ProtocolError("event without a known type")
    if not isinstance(data.get("data", {}), dict):
        raise ProtocolError("event data is not an object")
    try:
        return MediaEvent(**data)
    except TypeError as exc:
        raise ProtocolError(f"bad event: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class MessageReader:
    """Reads messages off a stream, skipping lines that are too long whole, so framing survives them."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def read(self) -> Message | None:
        """The next message, or None at end of stream. Raises ProtocolError for a bad line (already consumed:
        the caller logs it and reads on)."""
        line = await self._readline()
        return None if line is None else decode(line)

    async def _readline(self) -> bytes | None:
        try:
            return (await self._reader.readuntil(b"\n"))[:-1]
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                logger.warning("stream ended inside a message", extra={"bytes": len(exc.partial)})
            return None
        except asyncio.LimitOverrunError as exc:
            await self._skip_line(exc.consumed)
            raise LineTooLong() from None

    async def _skip_line(self, consumed: int) -> None:
        while True:
            await self._reader.readexactly(consumed)
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError as exc:
                consumed = exc.consumed

