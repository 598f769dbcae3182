"""Recordings once written: the VOD playlist of a show's MP4 (byte ranges into the one file, with
EXT-X-PROGRAM-DATE-TIME so the overlay's timed events line up with the replay) and the retention sweep."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from transcode import fmp4
from transcode.output import recording_origin_ms
from transcode.playlist import MediaPlaylist, Segment

logger = logging.getLogger(__name__)


def recording_path(directory: str, room: str, show_id: int) -> Path:
    return Path(directory) / room / f"{show_id}.mp4"


def vod_playlist(mp4: Path, uri: str) -> str | None:
    """The playlist of a recording (written or still being written), or None when it has no fragment yet."""
    origin = recording_origin_ms(mp4)
    try:
        data = mp4.read_bytes()
    except OSError:
        return None
    init, fragments = fmp4.split_file(data)
    if origin is None or not init or not fragments:
        return None
    playlist = MediaPlaylist(target_duration=max(1, math.ceil(max(f.duration for f in fragments) - 0.5)), vod=True)
    for fragment in fragments:
        playlist.add(Segment(uri, fragment.duration, origin + round(fragment.start * 1000), uri,
                             byterange=(len(fragment.data), fragment.offset), map_byterange=(len(init), 0)))
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
