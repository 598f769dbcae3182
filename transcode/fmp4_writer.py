"""Writing fragmented MP4 (ISO/IEC 14496-12 with the 14496-15 `avc1` and 14496-14 `mp4a` sample entries, as
CMAF and HLS players take it): an init segment (ftyp + moov) for an H.264 track and an optional AAC track,
then fragments (moof + mdat) that each start on a video keyframe.

Our own writer rather than ffmpeg's mp4 muxer: one fragment is built once and its bytes go both to the live
segment and to the recording, and a sample costs a few list appends (the remuxed room's whole cost is Python
per frame). H.264 arrives as NAL units and is stored length-prefixed (4 bytes), with its parameter sets in
the `avcC` box and, as browsers send them, in-band before each IDR. No B-frames (WebRTC does not send them;
our x264 runs the baseline profile), so decode order is presentation order and no composition offsets are
written.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from transcode.fmp4 import Fragment

VIDEO_TRACK = 1
AUDIO_TRACK = 2
_MATRIX = struct.pack("!9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = (ord("u") - 0x60) << 10 | (ord("n") - 0x60) << 5 | (ord("d") - 0x60)
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
_TRUN_VIDEO = 0x000701
"""data-offset, sample-duration, sample-size and sample-flags present."""
_TRUN_AUDIO = 0x000301
"""data-offset, sample-duration and sample-size present (flags from tfhd)."""
SYNC_SAMPLE = 0x02000000
"""sample_depends_on = 2 (an I-frame)."""
NON_SYNC_SAMPLE = 0x01010000
"""sample_depends_on = 1 and sample_is_non_sync_sample."""
_HIGH_PROFILES = {100, 110, 122, 144}
"""Profiles whose avcC carries chroma format and bit depths (ISO/IEC 14496-15 5.3.3.1.2)."""


def box(kind: bytes, *parts: bytes) -> bytes:
    size = 8 + sum(len(part) for part in parts)
    return struct.pack("!I4s", size, kind) + b"".join(parts)


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack("!I", version << 24 | flags), *parts)


@dataclass(frozen=True)
class TrackFormat:
    """What one track's sample entry says: H.264 (`sps`/`pps` set) or AAC (`audio_config` set)."""

    timescale: int
    width: int = 0
    height: int = 0
    sps: tuple[bytes, ...] = ()
    pps: tuple[bytes, ...] = ()
    channels: int = 0
    audio_config: bytes = b""
    """The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): the AAC encoder's extradata."""
    bit_rate: int = 0


def init_segment(video: TrackFormat, audio: TrackFormat | None) -> bytes:
    """ftyp + moov with empty sample tables and an mvex: the EXT-X-MAP of the segments that follow."""
    ftyp = box(b"ftyp", b"iso5", struct.pack("!I", 512), b"iso5iso6mp41")
    tracks = [_trak(VIDEO_TRACK, video)] + ([_trak(AUDIO_TRACK, audio)] if audio is not None else [])
    trex = [full_box(b"trex", 0, 0, struct.pack("!5I", track, 1, 0, 0, 0))
            for track in (VIDEO_TRACK, AUDIO_TRACK)[:len(tracks)]]
    mvhd = full_box(b"mvhd", 0, 0, struct.pack("!5I", 0, 0, 1000, 0, 0x00010000), struct.pack("!H10x", 0x0100),
                    _MATRIX, bytes(24), struct.pack("!I", len(tracks) + 1))
    return ftyp + box(b"moov", mvhd, *tracks, box(b"mvex", *trex))


def _trak(track_id: int, fmt: TrackFormat) -> bytes:
    video = bool(fmt.sps)
    tkhd = full_box(b"tkhd", 0, 0x3, struct.pack("!5I", 0, 0, track_id, 0, 0), bytes(8),
                    struct.pack("!hhh2x", 0, 0, 0 if video else 0x0100), _MATRIX,
                    struct.pack("!II", fmt.width << 16, fmt.height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack("!4IHH", 0, 0, fmt.timescale, 0, _LANGUAGE_UND, 0))
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = full_box(b"hdlr", 0, 0, struct.pack("!I", 0), handler, bytes(12), name)
    header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack("!I", 1), full_box(b"url ", 0, 1)))
    entry = _avc1(fmt) if video else _mp4a(fmt)
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack("!I", 1), entry),
               full_box(b"stts", 0, 0, bytes(4)), full_box(b"stsc", 0, 0, bytes(4)),
               full_box(b"stsz", 0, 0, bytes(8)), full_box(b"stco", 0, 0, bytes(4)))
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", header, dinf, stbl)))


def _avc1(fmt: TrackFormat) -> bytes:
    sps = fmt.sps[0]
    config = [bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE0 | len(fmt.sps)])]
    config += [struct.pack("!H", len(unit)) + unit for unit in fmt.sps]
    config += [bytes([len(fmt.pps)])] + [struct.pack("!H", len(unit)) + unit for unit in fmt.pps]
    if sps[1] in _HIGH_PROFILES:
        chroma, luma_depth, chroma_depth = high_profile_format(sps)
        config.append(bytes([0xFC | chroma, 0xF8 | luma_depth, 0xF8 | chroma_depth, 0]))
    return box(b"avc1", bytes(6), struct.pack("!H", 1), bytes(16), struct.pack("!HH", fmt.width, fmt.height),
               struct.pack("!II", 0x00480000, 0x00480000), bytes(4), struct.pack("!H", 1), bytes(32),
               struct.pack("!Hh", 0x0018, -1), box(b"avcC", *config))


def _mp4a(fmt: TrackFormat) -> bytes:
    decoder_config = _descriptor(4, bytes([0x40, 0x15]), bytes(3), struct.pack("!II", fmt.bit_rate, fmt.bit_rate),
                                 _descriptor(5, fmt.audio_config))
    es = _descriptor(3, struct.pack("!HB", 0, 0), decoder_config, _descriptor(6, b"\x02"))
    return box(b"mp4a", bytes(6), struct.pack("!H", 1), bytes(8), struct.pack("!HH", fmt.channels, 16), bytes(4),
               struct.pack("!I", fmt.timescale << 16), full_box(b"esds", 0, 0, es))


def _descriptor(tag: int, *parts: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3), its size in the 4-byte form every reader takes."""
    body = b"".join(parts)
    size = len(body)
    return bytes([tag, 0x80 | size >> 21 & 0x7F, 0x80 | size >> 14 & 0x7F, 0x80 | size >> 7 & 0x7F, size & 0x7F]) + body


def high_profile_format(sps: bytes) -> tuple[int, int, int]:
    """chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8 of a High-profile SPS (H.264 7.3.2.1.1)."""
    bits = _Bits(sps.replace(b"\x00\x00\x03", b"\x00\x00")[4:])
    bits.exp_golomb()  # seq_parameter_set_id
    chroma = bits.exp_golomb()
    if chroma == 3:
        bits.read(1)  # separate_colour_plane_flag
    return chroma, bits.exp_golomb(), bits.exp_golomb()


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def read(self, count: int) -> int:
        if count > self.left:
            raise ValueError("SPS too short")
        self.left -= count
        return self.value >> self.left & ((1 << count) - 1)

    def exp_golomb(self) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.read(zeros)


@dataclass
class _Track:
    timescale: int
    origin: int
    """Track time (in its timescale) of the writer's time 0."""
    pts: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    data: list[bytes | memoryview] = field(default_factory=list)
    last: int = -1
    """pts of the last sample taken."""

    def clear(self) -> None:
        self.pts, self.sizes, self.flags, self.data = [], [], [], []

    def durations(self, end: int | None, default: int) -> list[int]:
        """Each sample lasts until the next one; the last until `end`, or as long as the one before it."""
        pts = self.pts
        durations = [after - before for before, after in itertools.pairwise(pts)]
        last = end - pts[-1] if end is not None and end > pts[-1] else (durations[-1] if durations else default)
        durations.append(last)
        return durations


class FragmentWriter:
    """Samples in, whole fragments out. A fragment closes at the first keyframe at least `min_fragment`
    seconds after its start (the packager's segment length), or when `flush` is called. Audio is taken from
    the first video sample on, so every fragment starts with both tracks."""

    def __init__(self, video: TrackFormat, audio: TrackFormat | None, origin: float, min_fragment: float) -> None:
        self.video_format, self.audio_format = video, audio
        self.init = init_segment(video, audio)
        self.origin = origin
        """Output time (seconds since the show's time 0) of this writer's time 0: its first video sample."""
        self._video = _Track(video.timescale, round(origin * video.timescale))
        self._audio = _Track(audio.timescale, round(origin * audio.timescale)) if audio is not None else None
        self._min_ticks = round(min_fragment * video.timescale)
        self._sequence = 0
        self._start: int | None = None
        """pts of the first video sample since the writer started or was flushed (audio waits for it)."""
        self._written = len(self.init)
        """Bytes written so far, the init segment included: where the next fragment starts in a file."""

    def add_video(self, units: Sequence[bytes | memoryview], pts: int, keyframe: bool) -> Fragment | None:
        """One access unit (its NAL units, without start codes) at `pts` in the video timescale; returns the
        fragment this keyframe closed, if any."""
        track = self._video
        if pts <= track.last:
            pts = track.last + 1
        fragment = None
        if track.pts:
            if keyframe and pts - track.pts[0] >= self._min_ticks:
                fragment = self._build(pts)
        elif not keyframe or pts < track.origin:
            return None
        else:
            self._start = pts
        track.last = pts
        track.pts.append(pts)
        track.flags.append(SYNC_SAMPLE if keyframe else NON_SYNC_SAMPLE)
        size = 0
        data = track.data
        for unit in units:
            length = len(unit)
            data.append(length.to_bytes(4, "big"))
            data.append(unit)
            size += 4 + length
        track.sizes.append(size)
        return fragment

    def add_audio(self, frame: bytes, pts: int) -> None:
        """One AAC frame at `pts` in the audio timescale; dropped when it starts before the video does."""
        audio, start = self._audio, self._start
        if (audio is None or start is None or pts <= audio.last or pts < audio.origin
                or pts * self._video.timescale < start * audio.timescale):
            return
        audio.last = pts
        audio.pts.append(pts)
        audio.sizes.append(len(frame))
        audio.data.append(frame)

    def flush(self) -> Fragment | None:
        """The samples taken since the last fragment, as one (the source ends or changes)."""
        fragment = self._build(None) if self._video.pts else None
        self._start = None
        return fragment

    def _build(self, end: int | None) -> Fragment:
        """moof + mdat of the samples so far; `end` is the pts of the keyframe that closes it."""
        self._sequence += 1
        video, audio = self._video, self._audio
        video_durations = video.durations(end, round(video.timescale / 30))
        tracks = [(VIDEO_TRACK, video, video_durations)]
        if audio is not None and audio.pts:
            tracks.append((AUDIO_TRACK, audio, audio.durations(None, 1024)))
        trafs_size = sum(8 + (20 if track_id == AUDIO_TRACK else 16) + 20 + 20
                         + len(track.pts) * (12 if track_id == VIDEO_TRACK else 8) for track_id, track, _ in tracks)
        moof_size = 8 + 16 + trafs_size
        offset = moof_size + 8
        trafs = []
        for track_id, track, durations in tracks:
            count = len(track.pts)
            if track_id == VIDEO_TRACK:
                tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack("!I", track_id))
                entries = struct.pack(f"!{3 * count}I", *[value for sample in zip(durations, track.sizes, track.flags,
                                                                                  strict=True) for value in sample])
                trun = full_box(b"trun", 0, _TRUN_VIDEO, struct.pack("!Ii", count, offset), entries)
            else:
                tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF | _TFHD_DEFAULT_SAMPLE_FLAGS,
                                struct.pack("!II", track_id, SYNC_SAMPLE))
                entries = struct.pack(f"!{2 * count}I", *[value for sample in zip(durations, track.sizes, strict=True)
                                                          for value in sample])
                trun = full_box(b"trun", 0, _TRUN_AUDIO, struct.pack("!Ii", count, offset), entries)
            tfdt = full_box(b"tfdt", 1, 0, struct.pack("!Q", track.pts[0] - track.origin))
            trafs.append(box(b"traf", tfhd, tfdt, trun))
            offset += sum(track.sizes)
        moof = box(b"moof", full_box(b"mfhd", 0, 0, struct.pack("!I", self._sequence)), *trafs)
        assert len(moof) == moof_size
        payload = [data for _id, track, _durations in tracks for data in track.data]
        mdat_size = offset - moof_size
        data = moof + struct.pack("!I4s", mdat_size, b"mdat") + b"".join(payload)
        start = (video.pts[0] - video.origin) / video.timescale
        fragment = Fragment(data, start, sum(video_durations) / video.timescale, self._written)
        self._written += len(data)
        video.clear()
        if audio is not None:
            audio.clear()
        return fragment
