"""Where the encoded program goes: fragmented MP4 muxers (PyAV's mp4 muxer cuts a fragment at the first
keyframe after `segment_seconds`), the live HLS directory they feed, and the show's recording file.

Files are written atomically (temporary file, then rename), so the web process never serves half a file.
"""

from __future__ import annotations

import contextlib
import fractions
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error

from transcode import fmp4
from transcode.encoding import AUDIO_RATE, VIDEO_CLOCK, VideoParams
from transcode.playlist import AAC_LC, MediaPlaylist, Segment, multivariant, peak_bandwidth

logger = logging.getLogger(__name__)

MEDIA_PLAYLIST = "media.m3u8"
MULTIVARIANT = "index.m3u8"
POSTER = "poster.jpg"


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class _Sink:
    """A write-only, unseekable file for the muxer: bytes go to a callback."""

    def __init__(self, receive: Callable[[bytes], None]) -> None:
        self.receive = receive

    def write(self, data: bytes) -> int:
        self.receive(bytes(data))
        return len(data)

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class Muxer:
    """One fragmented MP4 stream: a video track (H.264) and optionally an audio track (AAC)."""

    def __init__(self, target: str | _Sink, video: VideoParams, audio_extradata: bytes | None,
                 segment_seconds: float) -> None:
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof",
                   "min_frag_duration": str(int(segment_seconds * 0.9 * 1_000_000)),
                   "max_interleave_delta": "500000"}
        self.container = av.open(target, "w", format="mp4", options=options)
        self.video = self.container.add_stream("h264")
        self.video.width, self.video.height = video.width, video.height
        self.video.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.video.codec_context.extradata = video.extradata
        self.params = video
        self.audio = None
        if audio_extradata is not None:
            self.audio = self.container.add_stream("aac", rate=AUDIO_RATE)
            self.audio.layout = "stereo"
            self.audio.time_base = fractions.Fraction(1, AUDIO_RATE)
            self.audio.codec_context.extradata = audio_extradata
        self._last_video = -1
        self._last_audio = -1
        self.start: int | None = None
        """Video pts (1/90000) of the first sample."""

    def add_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        if self.start is None and not keyframe:
            return
        pts = max(pts, self._last_video + 1)
        if self.start is None:
            self.start = pts
        self._last_video = pts
        self._mux(self.video, VIDEO_CLOCK, data, pts, keyframe)

    def add_audio(self, data: bytes, pts: int) -> None:
        """Audio before the first video sample is dropped: every fragment starts with both tracks."""
        if self.audio is None or self.start is None or pts * VIDEO_CLOCK < self.start * AUDIO_RATE:
            return
        if pts <= self._last_audio:
            return
        self._last_audio = pts
        self._mux(self.audio, AUDIO_RATE, data, pts, True)

    def _mux(self, stream: av.stream.Stream, rate: int, data: bytes, pts: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = fractions.Fraction(1, rate)
        packet.stream = stream
        packet.is_keyframe = keyframe
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            logger.warning("a packet was refused by the muxer", extra={"error": str(exc)})

    def close(self) -> None:
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            logger.warning("muxer did not close cleanly", extra={"error": str(exc)})


@dataclass
class LiveHls:
    """The room's live HLS directory: init segments, a sliding window of media segments, the playlists."""

    directory: Path
    segment_seconds: float
    window: int
    wall_ms: Callable[[float], int]
    """Output seconds → server wall-clock ms (the timeline)."""
    playlist: MediaPlaylist = field(init=False)
    audio_codec: bool = False
    _muxer: Muxer | None = None
    _splitter: fmp4.Splitter = field(default_factory=fmp4.Splitter)
    _init_number: int = 0
    _discontinuity: bool = False
    _multivariant: str = ""

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.iterdir():  # an earlier show's files
            stale.unlink()
        self.playlist = MediaPlaylist(target_duration=max(1, round(self.segment_seconds)), window=self.window)

    @property
    def muxer(self) -> Muxer | None:
        return self._muxer

    def start(self, video: VideoParams, audio_extradata: bytes | None) -> Muxer:
        """A new init segment; segments after it follow a discontinuity, unless it is the first."""
        self.finish_muxer()
        self._init_number += 1
        self._discontinuity = self.playlist.next_sequence > 0
        self._splitter = fmp4.Splitter()
        self.audio_codec = audio_extradata is not None
        self._muxer = Muxer(_Sink(self._receive), video, audio_extradata, self.segment_seconds)
        return self._muxer

    def finish_muxer(self) -> None:
        if self._muxer is not None:
            self._muxer.close()  # flushes the last fragment through _receive
            self._muxer = None

    def end(self) -> None:
        """The show ended: last segment out, EXT-X-ENDLIST."""
        self.finish_muxer()
        self.playlist.ended = True
        self._write_playlist()

    def _receive(self, data: bytes) -> None:
        had_init = self._splitter.init is not None
        fragments = self._splitter.feed(data)
        if not had_init and self._splitter.init is not None:
            write_atomic(self.directory / f"init-{self._init_number}.mp4", self._splitter.init)
        for fragment in fragments:
            self._add(fragment)

    def _add(self, fragment: fmp4.Fragment) -> None:
        assert self._muxer is not None and self._muxer.start is not None
        start = self._muxer.start / VIDEO_CLOCK + fragment.start  # tfdt counts from the muxer's first sample
        sequence = self.playlist.next_sequence
        name = f"seg-{sequence}.m4s"
        write_atomic(self.directory / name, fragment.data)
        segment = Segment(name, fragment.duration, self.wall_ms(start), f"init-{self._init_number}.mp4",
                          self._discontinuity, size=len(fragment.data))
        self._discontinuity = False
        for gone in self.playlist.add(segment):
            (self.directory / gone.uri).unlink(missing_ok=True)
            if all(kept.map_uri != gone.map_uri for kept in self.playlist.segments):
                (self.directory / gone.map_uri).unlink(missing_ok=True)
        self._write_playlist()

    def _write_playlist(self) -> None:
        write_atomic(self.directory / MEDIA_PLAYLIST, self.playlist.render().encode())
        params = self._muxer.params if self._muxer is not None else None
        if params is None:
            return
        codecs = [params.codec] + ([AAC_LC] if self.audio_codec else [])
        text = multivariant(MEDIA_PLAYLIST, peak_bandwidth(self.playlist.segments), codecs,
                            (params.width, params.height))
        if text != self._multivariant:
            self._multivariant = text
            write_atomic(self.directory / MULTIVARIANT, text.encode())


@dataclass
class Recording:
    """The show's MP4 (fragmented: a crash leaves every fragment written so far playable) and a sidecar
    JSON with what the VOD playlist needs: `origin_ms`, the wall-clock time of the file's time 0 (its
    first video sample; later sources keep their place on the same clock, gaps included)."""

    path: Path
    origin_ms: int
    muxer: Muxer | None = None

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a packager restarted mid-show: keep what the last one wrote, as a part
            part = next(self.path.with_suffix(f".part{n}.mp4") for n in range(1, 10_000)
                        if not self.path.with_suffix(f".part{n}.mp4").exists())
            os.replace(self.path, part)
            with contextlib.suppress(OSError):
                os.replace(self.path.with_suffix(".json"), part.with_suffix(".json"))
        write_atomic(self.path.with_suffix(".json"), json.dumps({"origin_ms": self.origin_ms}).encode())

    def start(self, video: VideoParams, audio_extradata: bytes | None, segment_seconds: float) -> Muxer:
        """Kept across sources with the same parameters; different SPS/PPS travel in-band with keyframes."""
        if self.muxer is None:
            self.muxer = Muxer(str(self.path), video, audio_extradata, segment_seconds)
        return self.muxer

    def close(self) -> None:
        if self.muxer is not None:
            self.muxer.close()
            self.muxer = None


def recording_origin_ms(mp4: Path) -> int | None:
    try:
        value = json.loads(mp4.with_suffix(".json").read_text()).get("origin_ms")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None
