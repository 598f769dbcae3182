"""HTTP for HLS and recordings: `/hls/{room}/…` while a room is live (and briefly after, for EXT-X-ENDLIST),
`/recordings/{show}/…` for a show's MP4, VOD playlist and poster. Names are matched against a strict
pattern before any path is built, so no request can reach outside the media directories.

Playlists are `no-cache` (they change every segment); segments, init segments and recordings never change
once written, so they are cacheable for long (a CDN in front does the fan-out). Range requests come with
aiohttp's FileResponse. CORS for these paths follows `hls.cors_origins` (web/middleware.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from rooms.service import get_show
from transcode.output import MEDIA_PLAYLIST, MULTIVARIANT, POSTER
from transcode.playlist import MIME_TYPE
from transcode.recordings import PART_NAME, recording_path, vod_playlist
from web.errors import ApiError
from web.hls import HlsService
from web.middleware import CONFIG
from web.runtime import RUNTIME

HLS = web.AppKey("hls", HlsService)

_ROOM = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,62})[a-z0-9]$")
_LIVE_NAME = re.compile(r"^(?:index\.m3u8|media\.m3u8|poster\.jpg|init-[0-9]{1,9}\.mp4|seg-[0-9]{1,12}\.m4s)$")
_RECORDING_NAMES = {"recording.mp4", "index.m3u8", "poster.jpg"}
PLAYLIST_CACHE = "no-cache"
MEDIA_CACHE = "public, max-age=31536000, immutable"
POSTER_CACHE = "public, max-age=5"
CONTENT_TYPES = {".m3u8": MIME_TYPE, ".m4s": "video/iso.segment", ".mp4": "video/mp4", ".jpg": "image/jpeg"}


def _not_live(room: str) -> ApiError:
    return ApiError(404, "not_live", f"room {room[:64]!r} is not live", "room")


def _file(path: Path, cache: str) -> web.StreamResponse:
    if not path.is_file():
        raise ApiError(404, "not_found", "no such file (it may have left the live window)")
    return web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[path.suffix], "Cache-Control": cache})


async def live_file(request: web.Request) -> web.StreamResponse:
    room, name = request.match_info["room"], request.match_info["name"]
    if not _ROOM.match(room):
        raise ApiError(400, "invalid_room", "room must be a room slug", "room")
    if not _LIVE_NAME.match(name):
        raise ApiError(400, "invalid_name", "not an HLS file name", "name")
    hls = request.app[HLS]
    if not request.app[CONFIG].current.hls.enabled or not hls.is_served(room):
        raise _not_live(room)
    cache = {MULTIVARIANT: PLAYLIST_CACHE, MEDIA_PLAYLIST: PLAYLIST_CACHE, POSTER: POSTER_CACHE}.get(name, MEDIA_CACHE)
    return _file(hls.room_directory(room) / name, cache)


async def recording_file(request: web.Request) -> web.StreamResponse:
    show_id, name = request.match_info["show"], request.match_info["name"]
    if not show_id.isdigit() or len(show_id) > 18:
        raise ApiError(400, "invalid_show", "show must be a show id", "show")
    part = PART_NAME.match(name)
    if name not in _RECORDING_NAMES and part is None:
        raise ApiError(400, "invalid_name", f"one of {', '.join(sorted(_RECORDING_NAMES))} or part{{n}}.mp4", "name")
    async with request.app[RUNTIME].db.read() as session:
        show = await get_show(session, int(show_id))
    mp4 = recording_path(request.app[CONFIG].current.recordings.directory, show.room_slug, show.id)
    if name == "index.m3u8":
        text = vod_playlist(mp4)
        if text is None:
            raise ApiError(404, "no_recording", "this show has no recording (yet)")
        return web.Response(text=text, content_type=MIME_TYPE, headers={"Cache-Control": PLAYLIST_CACHE})
    if name == "poster.jpg":
        return _file(mp4.with_suffix(".jpg"), POSTER_CACHE)
    if part is not None:  # an earlier part never changes
        return _file(mp4.with_suffix(f".part{part.group(1)}.mp4"), MEDIA_CACHE)
    # Still growing while the show is live: not for long-lived caches until it ended.
    return _file(mp4, MEDIA_CACHE if show.status == "ended" else PLAYLIST_CACHE)


def add_routes(app: web.Application, hls: HlsService) -> None:
    app[HLS] = hls
    app.router.add_get("/hls/{room}/{name}", live_file, name="hls_file")
    app.router.add_get("/recordings/{show}/{name}", recording_file, name="recording_file")
