"""The web process's one MediaControl: N media workers (`media.workers`, one per core) behind it, each room
pinned to one worker by a stable hash of its name, so a room's publisher and viewers always meet in the same
process. Callers never learn how many workers there are."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from config.schema import LoggingSettings, MediaSettings
from media.api import MediaError, MediaEvent, SessionAnswer
from media.client import EventCallback, Subscribers
from media.supervisor import MediaSupervisor

logger = logging.getLogger(__name__)


class MediaRouter:
    """Implements MediaControl over several supervised workers; `subscribe` gets every worker's events."""

    def __init__(self, workers: Sequence[MediaSupervisor]) -> None:
        if not workers:
            raise ValueError("a media router needs at least one worker")
        self.workers = list(workers)
        self._subscribers = Subscribers()
        self._session_worker: dict[str, MediaSupervisor] = {}
        self._tap_worker: dict[str, MediaSupervisor] = {}
        for worker in self.workers:
            worker.subscribe(self._forward(worker))

    @classmethod
    def create(cls, settings: MediaSettings, logging_settings: LoggingSettings | None = None,
               **options: Any) -> MediaRouter:
        """`settings.workers` supervisors; `options` go to each MediaSupervisor."""
        return cls([MediaSupervisor(settings, logging_settings, index=index, **options)
                    for index in range(settings.workers)])

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        return self._subscribers.subscribe(callback)

    async def start(self) -> None:
        for worker in self.workers:
            await worker.start()

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        self._session_worker.clear()

    def worker_for(self, room: str) -> MediaSupervisor:
        digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
        return self.workers[int.from_bytes(digest, "big") % len(self.workers)]

    async def open_publisher(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        worker = self.worker_for(room)
        answer = await worker.open_publisher(room, session_id, offer_sdp)
        self._session_worker[session_id] = worker
        return answer

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        worker = self.worker_for(room)
        answer = await worker.open_viewer(room, session_id, offer_sdp, tracks)
        self._session_worker[session_id] = worker
        return answer

    async def renegotiate(self, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        worker = self._session_worker.get(session_id)
        if worker is None:
            raise MediaError("session_not_found", f"no media session {session_id!r}", 404, "session_id")
        return await worker.renegotiate(session_id, offer_sdp, tracks)

    async def close_session(self, session_id: str) -> bool:
        worker = self._session_worker.pop(session_id, None)
        if worker is not None:
            return await worker.close_session(session_id)
        # Not opened through this router as far as it knows (its open call timed out, say): ask every worker.
        return any(await asyncio.gather(*(each.close_session(session_id) for each in self.workers)))

    async def request_keyframe(self, room: str) -> None:
        await self.worker_for(room).request_keyframe(room)

    async def set_program_feed(self, room: str, session_id: str) -> None:
        await self.worker_for(room).set_program_feed(room, session_id)

    async def set_keyframe_cadence(self, room: str, seconds: str) -> None:
        await self.worker_for(room).set_keyframe_cadence(room, seconds)

    async def end_room(self, room: str) -> None:
        await self.worker_for(room).end_room(room)

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        codecs = await self.worker_for(room).open_tap(room, tap_id, host, port)
        self._tap_worker[tap_id] = self.worker_for(room)
        return codecs

    async def close_tap(self, tap_id: str) -> bool:
        worker = self._tap_worker.pop(tap_id, None)
        return await worker.close_tap(tap_id) if worker is not None else False

    async def stats(self) -> dict[str, Any]:
        """Every worker's counters merged: rooms are disjoint across workers, totals add up."""
        parts = await asyncio.gather(*(worker.stats() for worker in self.workers))
        return merge_stats(parts)

    async def check(self) -> None:
        """Readiness: every worker answers."""
        await self.stats()

    def _forward(self, worker: MediaSupervisor) -> EventCallback:
        def forward(event: MediaEvent) -> None:
            if (event.type == "session.closed" and event.session_id is not None
                    and self._session_worker.get(event.session_id) is worker):
                del self._session_worker[event.session_id]
            self._subscribers.emit(event)

        return forward


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Objects merge key by key, numbers add, lists concatenate; otherwise the first worker's value stays."""
    merged: dict[str, Any] = {}
    for part in parts:
        _merge_into(merged, part)
    return merged


def _merge_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        current = target.get(key)
        if key not in target:
            target[key] = _copy(value)
        elif isinstance(current, dict) and isinstance(value, dict):
            _merge_into(current, value)
        elif (_is_number(current) and _is_number(value)) or (isinstance(current, list) and isinstance(value, list)):
            target[key] = current + value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return list(value) if isinstance(value, list) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
