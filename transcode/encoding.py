"""Turning the program feed into what HLS players and MP4 files take: H.264 as is (remuxed, never decoded
except one keyframe now and then for a poster), VP8 decoded and encoded to H.264 once per room, Opus
decoded and encoded to AAC once per room."""

from __future__ import annotations

import fractions
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import av
import av.error
import numpy as np

from transcode.fmp4_writer import TrackFormat
from transcode.playlist import avc1_codec

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
_START_CODE = b"\x00\x00\x00\x01"


@dataclass(frozen=True)
class VideoParams:
    """What an MP4 video track needs before its first sample."""

    width: int
    height: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    codec: str
    """RFC 6381 codec string, e.g. avc1.42e01f."""

    def track(self) -> TrackFormat:
        return TrackFormat(VIDEO_CLOCK, width=self.width, height=self.height, sps=self.sps, pps=self.pps)


@dataclass(frozen=True)
class EncodedVideo:
    units: list[bytes | memoryview]
    """One H.264 access unit: its NAL units, without start codes."""
    seconds: float
    keyframe: bool


def nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (start codes removed)."""
    units = []
    for part in access_unit.split(b"\x00\x00\x01"):
        unit = part[:-1] if part.endswith(b"\x00") else part
        if unit:
            units.append(unit)
    return units


def annex_b(units: Sequence[bytes | memoryview]) -> bytes:
    """An access unit in Annex B (what a decoder takes)."""
    return b"".join(part for unit in units for part in (_START_CODE, unit))


class KeyframeDecoder:
    """Decodes H.264 keyframes one at a time, each on its own (to learn a stream's size, for posters). One
    decoder serves the room, on one thread: a fresh decoder for each keyframe costs twice the frame (its
    threads, and its buffers faulted in anew)."""

    def __init__(self) -> None:
        self._decoder: av.VideoCodecContext | None = None

    def decode(self, units: Sequence[bytes | memoryview]) -> av.VideoFrame | None:
        decoder = self._decoder
        if decoder is None:
            created = av.CodecContext.create("h264", "r")
            assert isinstance(created, av.VideoCodecContext)
            created.thread_count = 1
            decoder = self._decoder = created
        try:
            frames = decoder.decode(av.Packet(annex_b(units))) + decoder.decode(None)
        except av.error.FFmpegError:
            self._decoder = None  # the next keyframe gets a fresh one
            return None
        decoder.flush_buffers()  # drained: ready for the next keyframe
        frame = frames[0] if frames else None
        return frame if isinstance(frame, av.VideoFrame) else None


class H264Params:
    """Keeps the stream's parameters, re-read when a keyframe brings different SPS/PPS."""

    def __init__(self, keyframes: KeyframeDecoder) -> None:
        self.keyframes = keyframes
        self.current: VideoParams | None = None

    def update(self, units: Sequence[bytes | memoryview]) -> av.VideoFrame | None:
        """Returns the decoded keyframe when the parameters changed (it was decoded to learn its size)."""
        sps = tuple(bytes(unit) for unit in units if unit[0] & 0x1F == 7)
        pps = tuple(bytes(unit) for unit in units if unit[0] & 0x1F == 8)
        if not sps or not pps or (self.current is not None and (sps, pps) == (self.current.sps, self.current.pps)):
            return None
        frame = self.keyframes.decode(units)
        if frame is None:
            return None
        self.current = VideoParams(frame.width, frame.height, sps, pps, avc1_codec(sps[0]))
        return frame


class Vp8ToH264:
    """VP8 frames in, H.264 access units out: one decoder and one x264 encoder per room, a keyframe every
    `keyframe_seconds` so segments can be cut on time."""

    def __init__(self, keyframe_seconds: float) -> None:
        self.keyframe_seconds = keyframe_seconds
        self.decoder = av.CodecContext.create("vp8", "r")
        self.encoder: av.VideoCodecContext | None = None
        self._next_key = 0.0
        self.last_frame: av.VideoFrame | None = None

    def transcode(self, data: bytes, seconds: float, keyframe: bool) -> list[EncodedVideo]:
        if keyframe:
            self._next_key = min(self._next_key, seconds)  # a new source: start it with a keyframe
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            return []
        out: list[EncodedVideo] = []
        for frame in frames:
            assert isinstance(frame, av.VideoFrame)
            self.last_frame = frame
            encoder = self._encoder(frame)
            image = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
            image.pts = round(seconds * VIDEO_CLOCK)
            image.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            if seconds >= self._next_key:
                image.pict_type = av.video.frame.PictureType.I
                self._next_key = seconds + self.keyframe_seconds
            for packet in encoder.encode(image):
                assert packet.pts is not None
                out.append(EncodedVideo(list(nal_units(bytes(packet))), packet.pts / VIDEO_CLOCK, packet.is_keyframe))
        return out

    def _encoder(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        """Opened on the first frame at its size; later sources are scaled to it (one track per show)."""
        if self.encoder is None:
            encoder = av.CodecContext.create("libx264", "w")
            assert isinstance(encoder, av.VideoCodecContext)
            encoder.width, encoder.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            encoder.pix_fmt = "yuv420p"
            encoder.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            encoder.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "baseline",
                               "repeat-headers": "1"}
            encoder.gop_size = 1 << 20  # keyframes only where asked
            encoder.bit_rate = max(300_000, encoder.width * encoder.height * 3)
            self.encoder = encoder
        return self.encoder


def opus_channels(packet: bytes | memoryview) -> int:
    """1 or 2: the stereo flag of an Opus packet's TOC byte (RFC 6716 3.1). Browsers send mono microphone
    audio unless the SDP asks for stereo; OBS sends stereo."""
    return 2 if packet and packet[0] & 0x04 else 1


AAC_BIT_RATE = {1: 64_000, 2: 96_000}
_AAC_STEREO_OPTIONS = {"aac_coder": "fast", "aac_pns": "0"}
AAC_OPTIONS = {1: {**_AAC_STEREO_OPTIONS, "aac_tns": "0"}, 2: _AAC_STEREO_OPTIONS}


class OpusToAac:
    """Opus packets in, AAC-LC frames (1024 samples at 48 kHz) out, in the source's channel count (mono AAC
    costs about half of stereo; a source that switches packet by packet is decoded to the count chosen at its
    start). The output is gapless: each packet's samples go where the timeline puts them, a small hole (a lost
    packet, a resync forward) is filled with silence and a small overlap (a resync back) is dropped; only
    a jump over `MAX_FILL` restarts the count from the packet's own time."""

    MAX_FILL = 5 * AUDIO_RATE
    SLACK = AUDIO_RATE // 1000
    """Differences up to 1 ms are rounding, not holes."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.layout = "stereo" if channels == 2 else "mono"
        self.decoder = av.CodecContext.create("opus", "r")
        assert isinstance(self.decoder, av.AudioCodecContext)
        self.decoder.sample_rate = AUDIO_RATE
        self.decoder.layout = self.layout  # decodes straight to the encoder's format: no resampler
        self.encoder = av.CodecContext.create("aac", "w")
        assert isinstance(self.encoder, av.AudioCodecContext)
        self.encoder.sample_rate = AUDIO_RATE
        self.encoder.layout = self.layout
        self.encoder.format = "fltp"
        self.encoder.bit_rate = AAC_BIT_RATE[channels]
        # ffmpeg's "fast" coder costs a third of "twoloop" at the same bit rate. Of its tools, perceptual noise
        # substitution is for lower bit rates than ours (and costs 5 % of the encoder in stereo). TNS costs 5-8 %
        # of the mono encoder and, at 64 kbit/s, shows no gain on a voice (SNR, segmental SNR and per band alike,
        # measured against the decoded Opus): off in mono; kept in stereo, with M/S and intensity stereo.
        self.encoder.options = AAC_OPTIONS[channels]
        self.encoder.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.encoder.flags |= av.codec.context.Flags.global_header
        self.encoder.open()
        self._next: int | None = None
        """Where the next decoded sample goes (in 1/48000 s)."""
        self._queued: list[tuple[bytes | memoryview, int]] = []
        self.filled = 0
        self.dropped = 0
        """Samples of silence inserted and of audio dropped to keep the output where the timeline puts it."""

    def track(self) -> TrackFormat:
        return TrackFormat(AUDIO_RATE, channels=self.channels, audio_config=bytes(self.encoder.extradata or b""),
                           bit_rate=AAC_BIT_RATE[self.channels])

    def add(self, data: bytes | memoryview, position: int) -> None:
        """Queue one Opus packet whose first sample belongs at `position` (in 1/48000 s), for `drain`."""
        self._queued.append((data, position))

    @property
    def queued(self) -> int:
        """Packets waiting for `drain`."""
        return len(self._queued)

    def drain(self) -> list[tuple[bytes, int]]:
        """(AAC frame, pts in 1/48000) pairs from the queued packets. Decoding them all, then encoding their
        samples as one frame, runs each codec hot, once per batch: made packet by packet, in between the
        video's, the same calls cost about 1.5 times as much (cold caches). The encoder's input stage (PyAV's) cuts
        1024-sample frames and carries their timestamps, so gapless input comes out gapless."""
        queued, self._queued = self._queued, []
        runs: list[tuple[int, list[np.ndarray]]] = []  # contiguous samples: (pts of the first, planes)
        end = None
        for data, position in queued:
            for pts, planes in self._decode(data, position):
                if pts != end:
                    runs.append((pts, []))
                runs[-1][1].append(planes)
                end = pts + planes.shape[1]
        return [encoded for pts, parts in runs for encoded in self._encode(np.concatenate(parts, axis=1), pts)]

    def transcode(self, data: bytes | memoryview, position: int) -> list[tuple[bytes, int]]:
        """One packet at once: `add` then `drain`."""
        self.add(data, position)
        return self.drain()

    def _decode(self, data: bytes | memoryview, position: int) -> list[tuple[int, np.ndarray]]:
        """(pts, planes) of one packet's samples, placed on the output."""
        try:
            decoded = self.decoder.decode(av.Packet(data))  # type: ignore[arg-type]  # any buffer will do
        except av.error.FFmpegError:
            return []
        out = []
        for frame in decoded:
            assert isinstance(frame, av.AudioFrame)
            out += self._place(frame.to_ndarray(), position)
            position += frame.samples
        return out

    def _encode(self, planes: np.ndarray, pts: int) -> list[tuple[bytes, int]]:
        frame = self._samples(planes)
        frame.pts = pts
        out = []
        for packet in self.encoder.encode(frame):
            assert packet.pts is not None
            out.append((bytes(packet), packet.pts))
        return out

    def _place(self, planes: np.ndarray, position: int) -> list[tuple[int, np.ndarray]]:
        """The samples, stamped where the output continues, after silence for a hole or without what
        overlaps."""
        expected = self._next
        if expected is None or abs(position - expected) > self.MAX_FILL:
            expected = position
        placed = []
        if position > expected + self.SLACK:
            self.filled += position - expected
            placed.append(np.zeros((self.channels, position - expected), np.float32))
        elif position < expected - self.SLACK:
            skip = expected - position
            self.dropped += min(skip, planes.shape[1])
            if skip >= planes.shape[1]:
                return []
            planes = planes[:, skip:]
        placed.append(planes)
        out = []
        for part in placed:
            out.append((expected, part))
            expected += part.shape[1]
        self._next = expected
        return out

    def _samples(self, planes: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes, np.float32), format="fltp", layout=self.layout)
        frame.sample_rate = AUDIO_RATE
        return frame
