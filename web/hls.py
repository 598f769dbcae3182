"""HLS and recordings, seen from the web process: a packager process per live room, started when the media
worker puts a program feed on air and stopped when the show ends (its "show.ended" event on the room's bus
topic). One tap per room, whatever the number of HLS viewers; the keyframe cadence runs only meanwhile.

A room's HLS stays served for a short while after its show ends, so players read EXT-X-ENDLIST; then its
directory is deleted and the room answers 404 like any room that is not live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bus import Bus, Event
from config.schema import Settings
from media.api import MediaControl, MediaError, MediaEvent
from rooms.live import SHOW_ENDED
from rooms.service import find_room, list_shows
from signaling.background import spawn
from store import Database
from transcode.packager import PackagerConfig
from transcode.recordings import recording_path, sweep
from transcode.supervisor import PackagerProcess

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Live:
    show_id: int
    process: PackagerProcess
    watcher: asyncio.Task[None] | None = None


@dataclass
class HlsService:
    settings: Callable[[], Settings]
    media: Callable[[], MediaControl]
    database: Callable[[], Database]
    bus: Callable[[], Bus]
    rooms: dict[str, _Live] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    """Rooms whose show ended lately → that show's id (their HLS is still served, with EXT-X-ENDLIST)."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _closed: bool = False

    def room_directory(self, room: str) -> Path:
        return Path(self.settings().hls.directory) / room

    def is_served(self, room: str) -> bool:
        return room in self.rooms or room in self.ended

    def on_media_event(self, event: MediaEvent) -> None:
        """The one hook: a program feed went on air in a room (a show starts, a publisher is back, the host
        switched feeds)."""
        if event.type == "track.up" and event.data.get("program") and event.room:
            spawn(self.ensure(event.room))

    async def ensure(self, room: str) -> None:
        """Package the room's live show; for a show already packaged, point the tap at it again (the media
        room is new after a reconnect) and restore the keyframe cadence."""
        settings = self.settings()
        if not settings.hls.enabled and not settings.recordings.enabled:
            return
        async with self._locks.setdefault(room, asyncio.Lock()):
            if self._closed:
                return
            show_id = await self._live_show(room)
            current = self.rooms.get(room)
            if current is not None and current.show_id != show_id:
                await self._stop(room)
                current = None
            if show_id is None:
                return
            if current is not None:
                if current.process.port is not None:
                    await self._tap(room, current.process.port)
                return
            await self._start(room, show_id)

    async def _start(self, room: str, show_id: int) -> None:
        settings = self.settings()
        self.ended.pop(room, None)
        self._clear_stale()
        if settings.recordings.enabled:
            await asyncio.to_thread(sweep, settings.recordings.directory, settings.recordings.retention_days)
        config = PackagerConfig(
            room=room, show_id=show_id,
            hls_directory=str(self.room_directory(room)) if settings.hls.enabled else "",
            recording=(str(recording_path(settings.recordings.directory, room, show_id))
                       if settings.recordings.enabled else ""),
            segment_seconds=settings.hls.segment_seconds, window_segments=settings.hls.window_segments,
            poster_seconds=settings.hls.poster_seconds)
        process = PackagerProcess(config, settings.logging, lambda port: self._tap(room, port))
        live = _Live(show_id, process)
        self.rooms[room] = live
        process.start()
        live.watcher = asyncio.create_task(self._watch(room, show_id), name=f"hls-watch-{room}")
        logger.info("packaging a show", extra={"room": room, "show_id": show_id})

    async def _tap(self, room: str, port: int) -> None:
        media = self.media()
        try:
            await media.open_tap(room, tap_id(room), "127.0.0.1", str(port))
            await media.set_keyframe_cadence(room, str(self.settings().hls.segment_seconds))
        except MediaError as exc:
            logger.info("no tap for the packager yet", extra={"room": room, "code": exc.code})

    async def _live_show(self, room: str) -> int | None:
        async with self.database().read() as session:
            found = await find_room(session, room)
            shows = await list_shows(session, "live", 1, room_id=found.id) if found is not None else []
        return shows[0].id if shows else None

    async def _watch(self, room: str, show_id: int) -> None:
        """Until the show ends: its "show.ended" event, or (missed while subscribing) the database says so."""
        subscription = self.bus().subscribe(f"room:{room}")
        try:
            if await self._live_show(room) == show_id:
                async for event in subscription:
                    if (isinstance(event, Event) and event.type == SHOW_ENDED
                            and event.payload.get("show_id") == show_id):
                        break
                    if not isinstance(event, Event) and await self._live_show(room) != show_id:
                        break  # a resync: events were lost, ask the database
        finally:
            await subscription.close()
        live = self.rooms.get(room)
        if live is not None and live.show_id == show_id:
            live.watcher = None
            spawn(self.stop(room))

    async def stop(self, room: str) -> None:
        async with self._locks.setdefault(room, asyncio.Lock()):
            await self._stop(room)

    async def _stop(self, room: str) -> None:
        live = self.rooms.pop(room, None)
        if live is None:
            return
        if live.watcher is not None:
            live.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.watcher
        with contextlib.suppress(MediaError):
            await self.media().close_tap(tap_id(room))
            await self.media().set_keyframe_cadence(room, "0")
        await live.process.stop()
        logger.info("show packaging finished", extra={"room": room, "show_id": live.show_id})
        self.ended[room] = live.show_id
        linger = self.settings().hls.segment_seconds * self.settings().hls.window_segments * 2
        asyncio.get_running_loop().call_later(linger, self._forget, room, live.show_id)

    def _clear_stale(self) -> None:
        """Live directories nobody serves any more (an earlier run of the server left them)."""
        root = Path(self.settings().hls.directory)
        if root.is_dir():
            for directory in root.iterdir():
                if directory.name not in self.rooms and directory.name not in self.ended:
                    shutil.rmtree(directory, ignore_errors=True)

    def _forget(self, room: str, show_id: int) -> None:
        if self.ended.get(room) == show_id and room not in self.rooms:
            del self.ended[room]
            shutil.rmtree(self.room_directory(room), ignore_errors=True)

    async def close(self) -> None:
        """Server stop: every live playlist ends and every recording is finalised; a start under way
        finishes first (it holds its room's lock), later ones do nothing."""
        self._closed = True
        await asyncio.gather(*(self.stop(room) for room in list(self._locks)))


def tap_id(room: str) -> str:
    return f"hls:{room}"
