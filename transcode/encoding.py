"""Turning the program feed into what HLS players and MP4 files take: H.264 as is (remuxed, never decoded
except one keyframe now and then for a poster), VP8 decoded and encoded to H.264 once per room, Opus
decoded and encoded to AAC once per room."""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass

import av
import av.error
from av.audio.fifo import AudioFifo
from av.audio.resampler import AudioResampler

from transcode.playlist import avc1_codec

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AAC_FRAME = 1024
_START_CODE = b"\x00\x00\x00\x01"


@dataclass(frozen=True)
class VideoParams:
    """What an MP4 video track needs before its first sample."""

    width: int
    height: int
    extradata: bytes
    """SPS and PPS in Annex B."""
    codec: str
    """RFC 6381 codec string, e.g. avc1.42e01f."""


@dataclass(frozen=True)
class EncodedVideo:
    data: bytes
    """One H.264 access unit in Annex B."""
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


def parameter_sets(access_unit: bytes) -> bytes | None:
    """SPS + PPS of a keyframe access unit in Annex B, or None when it carries neither."""
    sets = [unit for unit in nal_units(access_unit) if unit[0] & 0x1F in (7, 8)]
    if not any(unit[0] & 0x1F == 7 for unit in sets) or not any(unit[0] & 0x1F == 8 for unit in sets):
        return None
    return b"".join(_START_CODE + unit for unit in sets)


def decode_keyframe(access_unit: bytes) -> av.VideoFrame | None:
    """Decode one H.264 keyframe on its own (a fresh decoder: cheap, and done rarely)."""
    decoder = av.CodecContext.create("h264", "r")
    try:
        frames = decoder.decode(av.Packet(access_unit)) + decoder.decode(None)
    except av.error.FFmpegError:
        return None
    return frames[0] if frames else None


class H264Params:
    """Keeps the stream's parameters, re-read when a keyframe brings different SPS/PPS."""

    def __init__(self) -> None:
        self.current: VideoParams | None = None

    def update(self, access_unit: bytes) -> av.VideoFrame | None:
        """Returns the decoded keyframe when the parameters changed (it was decoded to learn its size)."""
        sets = parameter_sets(access_unit)
        if sets is None or (self.current is not None and sets == self.current.extradata):
            return None
        frame = decode_keyframe(access_unit)
        if frame is None:
            return None
        sps = next(unit for unit in nal_units(sets) if unit[0] & 0x1F == 7)
        self.current = VideoParams(frame.width, frame.height, sets, avc1_codec(sps))
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
                out.append(EncodedVideo(bytes(packet), packet.pts / VIDEO_CLOCK, packet.is_keyframe))
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


class OpusToAac:
    """Opus packets in, AAC-LC frames (1024 samples, 48 kHz stereo) out, with continuous timestamps: a
    packet more than `RESYNC_SAMPLES` away from where the last one ended (a loss, a new source) restarts
    the count from its own time."""

    RESYNC_SAMPLES = 2 * 960

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("opus", "r")
        self.decoder.sample_rate = AUDIO_RATE
        self.decoder.layout = "stereo"
        self.resampler = AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self.fifo = AudioFifo()
        self.encoder = av.CodecContext.create("aac", "w")
        assert isinstance(self.encoder, av.AudioCodecContext)
        self.encoder.sample_rate = AUDIO_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "fltp"
        self.encoder.bit_rate = 96_000
        # ffmpeg's "fast" coder costs a third of the default "twoloop" (about 0.6 % of a core against 1.5 %),
        # which is most of what a remuxed room costs; at 96 kbit/s stereo the difference is hard to hear.
        self.encoder.options = {"aac_coder": "fast"}
        self.encoder.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.encoder.flags |= av.codec.context.Flags.global_header
        self.encoder.open()
        self._next: int | None = None
        """Sample time of the fifo's first sample."""

    @property
    def extradata(self) -> bytes:
        return bytes(self.encoder.extradata or b"")

    def transcode(self, data: bytes, seconds: float) -> list[tuple[bytes, int]]:
        """(AAC frame, pts in 1/48000) pairs."""
        try:
            decoded = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            return []
        start = round(seconds * AUDIO_RATE)
        out: list[tuple[bytes, int]] = []
        for frame in decoded:
            for resampled in self.resampler.resample(frame):
                expected = None if self._next is None else self._next + self.fifo.samples
                if expected is None or abs(start - expected) > self.RESYNC_SAMPLES:
                    self.fifo = AudioFifo()
                    self._next = start
                resampled.pts = None
                self.fifo.write(resampled)
                start += resampled.samples
            while self.fifo.samples >= AAC_FRAME:
                chunk = self.fifo.read(AAC_FRAME)
                assert chunk is not None and self._next is not None
                chunk.pts, chunk.time_base = self._next, fractions.Fraction(1, AUDIO_RATE)
                self._next += AAC_FRAME
                for packet in self.encoder.encode(chunk):
                    assert packet.pts is not None
                    out.append((bytes(packet), packet.pts))
        return out
