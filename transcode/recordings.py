"""Recordings once written: the VOD playlist of a show's MP4 (byte ranges into the file, with
EXT-X-PROGRAM-DATE-TIME so the overlay's timed events line up with the replay) and the retention sweep.

A show is recorded in parts when one file cannot hold it for a browser: a new part starts where the tracks'
format changes (a new resolution, audio that appears or changes its channel count; transcode/output.py) and
where a packager restarted mid-show. `{show}.mp4` is always the latest part, the earlier ones are
`{show}.part{n}.mp4`; the playlist plays the parts in order, with a discontinuity between them."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

from transcode import fmp4
from transcode.output import recording_origin_ms
from transcode.playlist import MediaPlaylist, Segment

logger = logging.getLogger(__name__)


def recording_path(directory: str, room: str, show_id: int) -> Path:
    return Path(directory) / room / f"{show_id}.mp4"


PART_NAME = re.compile(r"^part([1-9][0-9]{0,3})\.mp4$")
"""How an earlier part of a recording is named in URLs (`{show}.part{n}.mp4` on disk)."""


def recording_parts(mp4: Path) -> list[tuple[str, Path]]:
    """(URL name, file) of each part of a recording in playing order: earlier parts, then the main file."""
    earlier = sorted((int(match.group(1)), path) for path in mp4.parent.glob(f"{mp4.stem}.part*.mp4")
                     if (match := PART_NAME.match(path.name[len(mp4.stem) + 1:])))
    parts = [(f"part{number}.mp4", path) for number, path in earlier]
    return parts + ([("recording.mp4", mp4)] if mp4.is_file() else [])


def vod_playlist(mp4: Path) -> str | None:
    """The playlist of a recording (written or still being written), or None when it has no fragment yet.
    Its URIs are the parts' URL names, relative to the playlist."""
    playlist = MediaPlaylist(target_duration=1, vod=True)
    for name, path in recording_parts(mp4):
        origin = recording_origin_ms(path)
        try:
            init, fragments = fmp4.split_file(path.read_bytes())
        except OSError:
            continue
        if origin is None or not init or not fragments:
            continue
        for index, fragment in enumerate(fragments):
            playlist.add(Segment(name, fragment.duration, origin + round(fragment.start * 1000), name,
                                 discontinuity=index == 0, byterange=(len(fragment.data), fragment.offset),
                                 map_byterange=(len(init), 0)))
    if not playlist.segments:
        return None
    playlist.target_duration = max(1, math.ceil(max(s.duration for s in playlist.segments) - 0.5))
    return playlist.render()


def sweep(directory: str, retention_days: int, now: float | None = None) -> int:
    """Delete recordings (and their sidecars) older than `retention_days` (0 keeps them forever)."""
    root = Path(directory)
    if retention_days <= 0 or not root.is_dir():
        return 0
    limit = (time.time() if now is None else now) - retention_days * 86_400
    removed = 0
    for path in root.glob("*/*"):
        if path.is_file() and path.stat().st_mtime < limit:
            path.unlink(missing_ok=True)
            removed += path.suffix == ".mp4"
    if removed:
        logger.info("old recordings deleted", extra={"count": removed, "retention_days": retention_days})
    return removed
