"""Where the fragments go (transcode/fmp4_writer.py builds each once): the live HLS directory, as segments of
a sliding window, and the show's recording file.

Live files are written atomically (temporary file, then rename), so the web process never serves half a
file; the recording is appended to, a whole fragment per write, so a crash leaves it playable up to its
last fragment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from transcode import fmp4
from transcode.encoding import VideoParams
from transcode.playlist import AAC_LC, MediaPlaylist, Segment, multivariant, peak_bandwidth

logger = logging.getLogger(__name__)

MEDIA_PLAYLIST = "media.m3u8"
MULTIVARIANT = "index.m3u8"
POSTER = "poster.jpg"


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclass
class LiveHls:
    """The room's live HLS directory: init segments, a sliding window of media segments, the playlists."""

    directory: Path
    segment_seconds: float
    window: int
    wall_ms: Callable[[float], int]
    """Output seconds → server wall-clock ms (the timeline)."""
    playlist: MediaPlaylist = field(init=False)
    params: VideoParams | None = None
    audio_codec: bool = False
    _origin: float = 0.0
    """Output time of the fragments' time 0 (their writer's)."""
    _init_number: int = 0
    _discontinuity: bool = False
    _multivariant: str = ""

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.iterdir():  # an earlier show's files
            stale.unlink()
        self.playlist = MediaPlaylist(target_duration=max(1, round(self.segment_seconds)), window=self.window)

    def start(self, init: bytes, origin: float, video: VideoParams, audio: bool) -> None:
        """A new init segment (a new source, or new parameters); the segments after it follow a
        discontinuity, unless they are the first."""
        self._init_number += 1
        write_atomic(self.directory / f"init-{self._init_number}.mp4", init)
        self._discontinuity = self.playlist.next_sequence > 0
        self._origin, self.params, self.audio_codec = origin, video, audio

    def add(self, fragment: fmp4.Fragment) -> None:
        sequence = self.playlist.next_sequence
        name = f"seg-{sequence}.m4s"
        write_atomic(self.directory / name, fragment.data)
        segment = Segment(name, fragment.duration, self.wall_ms(self._origin + fragment.start),
                          f"init-{self._init_number}.mp4", self._discontinuity, size=len(fragment.data))
        self._discontinuity = False
        for gone in self.playlist.add(segment):
            (self.directory / gone.uri).unlink(missing_ok=True)
            if all(kept.map_uri != gone.map_uri for kept in self.playlist.segments):
                (self.directory / gone.map_uri).unlink(missing_ok=True)
        self._write_playlist()

    def end(self) -> None:
        """The show ended: EXT-X-ENDLIST (the packager added the last segment before)."""
        self.playlist.ended = True
        self._write_playlist()

    def _write_playlist(self) -> None:
        write_atomic(self.directory / MEDIA_PLAYLIST, self.playlist.render().encode())
        if self.params is None:
            return
        codecs = [self.params.codec] + ([AAC_LC] if self.audio_codec else [])
        text = multivariant(MEDIA_PLAYLIST, peak_bandwidth(self.playlist.segments), codecs,
                            (self.params.width, self.params.height))
        if text != self._multivariant:
            self._multivariant = text
            write_atomic(self.directory / MULTIVARIANT, text.encode())


@dataclass
class Recording:
    """The show's MP4 (fragmented: a crash leaves every fragment written so far playable) and a sidecar
    JSON with what the VOD playlist needs: `origin_ms`, the wall-clock time of the file's time 0 (its
    first video sample; later sources keep their place on the same clock, gaps included).

    A show is recorded in parts when it must be: a browser's MSE cannot follow an `avc1` track whose
    resolution changes, nor a track that appears, so new track formats (new SPS/PPS, audio that starts or
    changes its channel count) start a new part, as does a packager restarted mid-show. `{show}.mp4` is
    always the latest part; the earlier ones are `{show}.part{n}.mp4` (transcode/recordings.py)."""

    path: Path
    _file: BinaryIO | None = None

    def start(self, init: bytes, origin_ms: int) -> None:
        """A new part, from its init segment: what the file held so far becomes the next earlier part."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            part = next(self.path.with_suffix(f".part{n}.mp4") for n in range(1, 10_000)
                        if not self.path.with_suffix(f".part{n}.mp4").exists())
            os.replace(self.path, part)
            with contextlib.suppress(OSError):
                os.replace(self.path.with_suffix(".json"), part.with_suffix(".json"))
        write_atomic(self.path.with_suffix(".json"), json.dumps({"origin_ms": origin_ms}).encode())
        self._file = open(self.path, "wb")  # noqa: SIM115 - open for the part's lifetime
        self._write(init)

    def add(self, fragment: fmp4.Fragment) -> None:
        self._write(fragment.data)

    def _write(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            self._file.flush()  # whole fragments reach the file as they come: a crash loses at most one

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def recording_origin_ms(mp4: Path) -> int | None:
    try:
        value = json.loads(mp4.with_suffix(".json").read_text()).get("origin_ms")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None
