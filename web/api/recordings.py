"""A show's recording: where to fetch the MP4, its VOD playlist and its poster."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from accounts.errors import NotFound
from rooms import service
from transcode.recordings import recording_parts, recording_path
from web.api.common import runtime, settings
from web.api.registry import Api

api = Api()


class RecordingOut(BaseModel):
    show_id: int
    room_slug: str
    status: Literal["recording", "ready"]
    """"recording" while the show is live (the file grows), "ready" once it ended."""
    bytes: int
    mp4: str
    """Fragmented MP4 of the show's latest part (the whole show unless it has several `parts`): plays in any
    player, range requests supported."""
    playlist: str
    """VOD HLS playlist with EXT-X-PROGRAM-DATE-TIME, to line timed events up with the replay."""
    poster: str
    parts: list[str]
    """Every file of the recording in playing order: one, unless the packager restarted mid-show or the
    picture's resolution or the audio's channels changed (the playlist plays them all, with a
    discontinuity between them)."""


@api.route("GET", "/api/shows/{id}/recording", summary="A show's recording", tag="shows",
           response=RecordingOut, errors=(404,))
async def get_recording(request: web.Request) -> RecordingOut:
    show_id = request.match_info["id"]
    if not show_id.isdigit():
        raise NotFound("show_not_found", "no such show")
    async with runtime(request).db.read() as session:
        show = await service.get_show(session, int(show_id))
    path = recording_path(settings(request).recordings.directory, show.room_slug, show.id)
    if not path.is_file():
        raise NotFound("no_recording", "this show has no recording")
    base = f"/recordings/{show.id}"
    return RecordingOut(show_id=show.id, room_slug=show.room_slug,
                        status="recording" if show.status == "live" else "ready", bytes=path.stat().st_size,
                        mp4=f"{base}/recording.mp4", playlist=f"{base}/index.m3u8", poster=f"{base}/poster.jpg",
                        parts=[f"{base}/{name}" for name, _path in recording_parts(path)])
