"""Reading fragmented MP4 (ISO/IEC 14496-12) just far enough to cut it into HLS segments: top-level boxes,
track timescales from the init segment, and each fragment's start time and duration from its `moof`.

The muxer (PyAV/ffmpeg's mp4 muxer) decides where fragments are; this module only finds them, so the
playlists describe the bytes exactly as written.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

_CONTAINERS = {b"moov", b"trak", b"mdia", b"moof", b"traf"}


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int
    """Offset of the box header in the buffer it was read from."""
    size: int

    def body(self, data: bytes) -> bytes:
        header = 16 if int.from_bytes(data[self.start:self.start + 4], "big") == 1 else 8
        return data[self.start + header:self.start + self.size]


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The complete boxes in data[start:end], in order; stops at the first incomplete one."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from("!I4s", data, offset)
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack_from("!Q", data, offset + 8)[0]
        elif size == 0:
            size = end - offset
        if size < 8 or offset + size > end:
            return
        yield Box(kind, offset, size)
        offset += size


def find(data: bytes, path: list[bytes]) -> Iterator[bytes]:
    """Bodies of the boxes at `path` (e.g. [b"moov", b"trak"]) anywhere under data's top level."""
    for box in boxes(data):
        if box.type != path[0]:
            continue
        if len(path) == 1:
            yield box.body(data)
        elif box.type in _CONTAINERS:
            yield from find(box.body(data), path[1:])


def timescales(init: bytes) -> dict[int, int]:
    """Track id → media timescale, from an init segment (ftyp + moov)."""
    result = {}
    for trak in find(init, [b"moov", b"trak"]):
        tkhd = next(find(trak, [b"tkhd"]))
        track_id = struct.unpack_from("!I", tkhd, 20 if tkhd[0] == 1 else 12)[0]
        mdhd = next(find(trak, [b"mdia", b"mdhd"]))
        result[track_id] = struct.unpack_from("!I", mdhd, 20 if mdhd[0] == 1 else 12)[0]
    return result


@dataclass(frozen=True)
class TrackRun:
    track_id: int
    start: int
    """baseMediaDecodeTime, in the track's timescale."""
    duration: int


def fragment_runs(moof: bytes) -> list[TrackRun]:
    """Start and duration of each track in one `moof` body."""
    runs = []
    for traf in find(moof, [b"traf"]):
        tfhd = next(find(traf, [b"tfhd"]))
        flags = int.from_bytes(tfhd[1:4], "big")
        track_id = struct.unpack_from("!I", tfhd, 4)[0]
        offset = 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
        default_duration = struct.unpack_from("!I", tfhd, offset)[0] if flags & 0x08 else 0
        tfdt = next(find(traf, [b"tfdt"]), None)
        start = 0
        if tfdt is not None:
            start = struct.unpack_from("!Q" if tfdt[0] == 1 else "!I", tfdt, 4)[0]
        duration = sum(_trun_durations(trun, default_duration) for trun in find(traf, [b"trun"]))
        runs.append(TrackRun(track_id, start, duration))
    return runs


def _trun_durations(trun: bytes, default_duration: int) -> int:
    flags = int.from_bytes(trun[1:4], "big")
    count: int = struct.unpack_from("!I", trun, 4)[0]
    offset = 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
    if not flags & 0x100:
        return count * default_duration
    stride = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    return sum(int(struct.unpack_from("!I", trun, offset + n * stride)[0]) for n in range(count))


@dataclass(frozen=True)
class Fragment:
    data: bytes
    """moof + mdat (and any box between them), ready to serve as one media segment."""
    start: float
    """Seconds on the muxer's timeline (the first track's tfdt)."""
    duration: float
    offset: int = 0
    """Byte offset in the stream it was cut from (for byte-range playlists of a whole file)."""


@dataclass
class Splitter:
    """Cuts a growing fMP4 byte stream into its init segment and fragments as their bytes complete. Each
    byte is looked at once: box headers give the sizes, so a large `mdat` is waited for, not re-scanned."""

    init: bytes | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _consumed: int = 0
    """Stream offset of _buffer[0]."""
    _scan: int = 0
    """Where the next unread top-level box starts in _buffer."""
    _moof: Box | None = None
    _scales: dict[int, int] = field(default_factory=dict)

    def feed(self, data: bytes) -> list[Fragment]:
        self._buffer += data
        out: list[Fragment] = []
        while True:
            box = self._next_box()
            if box is None:
                break
            self._scan = box.start + box.size
            if self.init is None:
                if box.type == b"moov":
                    self.init = bytes(self._buffer[:self._scan])
                    self._scales = timescales(self.init)
                    self._drop(self._scan)
            elif box.type == b"moof":
                self._moof = box
            elif box.type == b"mdat" and self._moof is not None:
                out.append(self._fragment(self._moof, self._scan))
                self._moof = None
                self._drop(self._scan)
        return out

    def _next_box(self) -> Box | None:
        if len(self._buffer) - self._scan < 16:
            return None
        size, kind = struct.unpack_from("!I4s", self._buffer, self._scan)
        if size == 1:
            size = struct.unpack_from("!Q", self._buffer, self._scan + 8)[0]
        if size < 8 or self._scan + size > len(self._buffer):
            return None
        return Box(kind, self._scan, size)

    def _drop(self, end: int) -> None:
        del self._buffer[:end]
        self._consumed += end
        self._scan -= end

    def _fragment(self, moof: Box, end: int) -> Fragment:
        data = bytes(self._buffer[:end])
        runs = fragment_runs(moof.body(data))
        first = min(runs, key=lambda run: run.track_id)
        scale = self._scales.get(first.track_id, 1) or 1
        return Fragment(data, first.start / scale, first.duration / scale, self._consumed)


def split_file(data: bytes) -> tuple[bytes, list[Fragment]]:
    """A whole fMP4 file: its init segment and fragments (a crashed recording ends at its last whole one)."""
    splitter = Splitter()
    fragments = splitter.feed(data)
    return splitter.init or b"", fragments
