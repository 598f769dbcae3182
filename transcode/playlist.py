"""HLS playlists, exact to RFC 8216: the live media playlist (a sliding window of fMP4 segments), the
multivariant playlist that names it, and a VOD playlist of byte ranges into a recording.

Every segment carries EXT-X-PROGRAM-DATE-TIME (server clock), so timed events (the overlay) line up with
the picture; a new program source or a new init segment starts with EXT-X-DISCONTINUITY.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

VERSION = 7
"""fMP4 segments with EXT-X-MAP (version 6+); 7 is what CMAF players expect."""
MIME_TYPE = "application/vnd.apple.mpegurl"


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float
    program_date_ms: int
    """Server wall-clock time of the segment's first sample, in ms since the epoch."""
    map_uri: str
    discontinuity: bool = False
    byterange: tuple[int, int] | None = None
    """(length, offset) into `uri` for a single-file recording."""
    map_byterange: tuple[int, int] | None = None
    size: int = 0


def program_date_time(ms: int) -> str:
    """ISO 8601 with milliseconds and a Z, as RFC 8216 section 4.3.2.6 asks."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _byterange(value: tuple[int, int]) -> str:
    return f"{value[0]}@{value[1]}"


@dataclass
class MediaPlaylist:
    """A media playlist: live (a window that slides, deleting what leaves it) or a whole VOD."""

    target_duration: int
    """EXT-X-TARGETDURATION: never lowered, raised only if a segment runs long (a late keyframe)."""
    window: int | None = None
    """Segments kept in a live playlist; None keeps all (VOD)."""
    segments: list[Segment] = field(default_factory=list)
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    ended: bool = False
    vod: bool = False

    def add(self, segment: Segment) -> list[Segment]:
        """Append a segment; returns the segments that left the window (their files can go)."""
        self.segments.append(segment)
        self.target_duration = max(self.target_duration, round(segment.duration))
        removed: list[Segment] = []
        while self.window is not None and len(self.segments) > self.window:
            gone = self.segments.pop(0)
            removed.append(gone)
            self.media_sequence += 1
            if self.segments[0].discontinuity:
                self.discontinuity_sequence += 1  # RFC 8216 6.2.1: its tag left with the segment before it
        return removed

    @property
    def next_sequence(self) -> int:
        return self.media_sequence + len(self.segments)

    def render(self) -> str:
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", f"#EXT-X-TARGETDURATION:{self.target_duration}"]
        if self.vod:
            lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
        lines += [f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
                  f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
                  "#EXT-X-INDEPENDENT-SEGMENTS"]
        current_map: tuple[str, tuple[int, int] | None] | None = None
        for index, segment in enumerate(self.segments):
            if segment.discontinuity and index > 0:
                lines.append("#EXT-X-DISCONTINUITY")
            if (segment.map_uri, segment.map_byterange) != current_map:
                current_map = (segment.map_uri, segment.map_byterange)
                extra = f',BYTERANGE="{_byterange(segment.map_byterange)}"' if segment.map_byterange else ""
                lines.append(f'#EXT-X-MAP:URI="{segment.map_uri}"{extra}')
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_ms)}")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            if segment.byterange is not None:
                lines.append(f"#EXT-X-BYTERANGE:{_byterange(segment.byterange)}")
            lines.append(segment.uri)
        if self.ended or self.vod:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def peak_bandwidth(segments: Iterable[Segment]) -> int:
    """BANDWIDTH of a variant: the peak segment bit rate, bits per second."""
    rates = [segment.size * 8 / segment.duration for segment in segments if segment.duration > 0]
    return max(1000, math.ceil(max(rates, default=0)))


def multivariant(media_uri: str, bandwidth: int, codecs: list[str], resolution: tuple[int, int] | None) -> str:
    attributes = [f"BANDWIDTH={bandwidth}", f'CODECS="{",".join(codecs)}"']
    if resolution is not None:
        attributes.append(f"RESOLUTION={resolution[0]}x{resolution[1]}")
    return "\n".join(["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS",
                      f"#EXT-X-STREAM-INF:{','.join(attributes)}", media_uri]) + "\n"


def avc1_codec(sps: bytes) -> str:
    """The RFC 6381 codec string of an H.264 stream from its SPS NAL unit (header byte first)."""
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


AAC_LC = "mp4a.40.2"
