"""A/V sync over an hour, without waiting an hour: the real packager (RTP assembly, timeline, audio placement,
fMP4 writer, recording) is fed an hour of tap datagrams as fast as it takes them, from a publisher whose sound
card runs 100 ppm fast and whose camera clock runs 100 ppm slow (against each other and against the
server's clock), over a network with jitter, a few seconds of congestion now and then, and a reconnect
half-way. Every video frame and every audio sample carries its capture time (server clock) through to the
recording, which is then read back: audio and video must stay within 50 ms of each other everywhere, and the
audio track must have no gap or overlap other than the resyncs that drift makes necessary.

Only the two codec calls are stand-ins (an hour of real Opus decoding and AAC encoding takes minutes): the
"Opus" packets carry their capture time, the "decoder" turns it into samples whose values are their
capture times, and the "encoder" frames them into 1024-sample frames with the same PyAV stage the real
encoder uses, each frame's payload being its first sample's value.
"""

from __future__ import annotations

import fractions
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.audio.resampler import AudioResampler

from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION
from transcode import fmp4, packager
from transcode.encoding import OpusToAac, nal_units
from transcode.fmp4_writer import AUDIO_TRACK, VIDEO_TRACK
from transcode.packager import Packager, PackagerConfig
from transcode.timeline import AUDIO_TOLERANCE, SLEW

pytestmark = pytest.mark.timeout(120)

HOUR = 3600.0
FPS = 30
START_NS = 1_767_225_600_000_000_000
AUDIO_PPM, VIDEO_PPM = 100e-6, -100e-6
RECONNECT_AT, RECONNECT_GAP = 1800.0, 2.0
CAPTURE_BASE = 1000.0
"""Added to capture times so that no real sample's value is 0 (inserted silence is)."""
SEED = 8
QUEUE = 0.15
"""Seconds of queueing delay during congestion."""
FILLER = 12
"""NAL unit type of filler data: decoders skip it; here it carries the frame's capture time."""


class _CapturedOpus:
    """Stand-in decoder: a packet's 960 samples, each valued at its capture time (seconds)."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        self.step = 1 / (48000 * (1 + AUDIO_PPM))

    def decode(self, packet: av.Packet[Any]) -> list[av.AudioFrame]:
        start = float(bytes(packet)[1:])
        samples = (start + np.arange(960) * self.step).astype(np.float32)[np.newaxis, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self.layout)
        frame.sample_rate = 48000
        return [frame]


class _CapturedAac:
    """Stand-in encoder: 1024-sample frames cut by PyAV's audio stage (as in the real encoder), each
    "encoded" as the value of its first sample."""

    def __init__(self, real: av.AudioCodecContext) -> None:
        self.extradata = real.extradata
        self.framer = AudioResampler(format="fltp", layout=real.layout, rate=48000, frame_size=1024)

    def encode(self, frame: av.AudioFrame) -> list[av.Packet[Any]]:
        frame.time_base = fractions.Fraction(1, 48000)
        packets = []
        for chunk in self.framer.resample(frame):
            packet = av.Packet(struct.pack("!d", float(chunk.to_ndarray()[0, 0])))
            packet.pts = chunk.pts
            packets.append(packet)
        return packets


class _StandInCodecs(OpusToAac):
    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.decoder = _CapturedOpus(self.layout)  # type: ignore[assignment]
        self.encoder = _CapturedAac(self.encoder)  # type: ignore[assignment]


def _gop() -> list[list[bytes]]:
    """One second of 64x64 H.264 (a keyframe, then 29 P-frames) as NAL units, reused all hour."""
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width = encoder.height = 64
    encoder.pix_fmt, encoder.time_base, encoder.gop_size = "yuv420p", fractions.Fraction(1, FPS), FPS
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "repeat-headers": "1"}
    frames = []
    for index in range(FPS):
        image = av.VideoFrame.from_ndarray(np.full((64, 64, 3), index * 8, np.uint8), format="rgb24")
        image = image.reformat(format="yuv420p")
        image.pts = index
        frames += [nal_units(bytes(packet)) for packet in encoder.encode(image)]
    frames += [nal_units(bytes(packet)) for packet in encoder.encode(None)]
    assert len(frames) == FPS and frames[0][0][0] & 0x1F == 7
    return frames


@dataclass
class _Path:
    """The network between publisher and server: a base delay, jitter, congestion; each kind's packets stay
    in order."""

    rng: np.random.Generator
    delay: float

    def arrivals(self, captured: np.ndarray) -> np.ndarray:
        jitter = np.minimum(self.rng.exponential(0.004, len(captured)), 0.08)
        queue = np.where((captured % 600) < 3, QUEUE, 0.0)  # 3 s of it every 10 minutes, as each source starts too
        return np.maximum.accumulate(captured + self.delay + jitter + queue)


def _datagram(kind: str, codec: str, epoch: int, arrival: float, sequence: int, timestamp: int, marker: bool,
              payload: bytes) -> bytes:
    header = TAP_HEADER.pack(TAP_MAGIC, TAP_VERSION, KINDS[kind], CODECS[codec], 0, epoch,
                             START_NS + round(arrival * 1e9))
    rtp = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, 1)
    return header + rtp + payload


def _source(epoch: int, start: float, end: float, delay: float, rng: np.random.Generator,
            gop: list[list[bytes]]) -> list[tuple[float, bytes]]:
    """(arrival, datagram) of one publisher session from `start` to `end` seconds of server time."""
    out: list[tuple[float, bytes]] = []
    video_base, audio_base = (int(value) for value in rng.integers(0, 2**32, 2))
    frames = np.arange(int((end - start) * FPS))
    captured: np.ndarray = start + frames / FPS
    sequence = int(rng.integers(0, 2**16))
    for index, arrival, capture in zip(frames, _Path(rng, delay).arrivals(captured), captured, strict=True):
        timestamp = video_base + round((capture - start) * 90000 * (1 + VIDEO_PPM))
        units = [*gop[index % FPS], bytes([FILLER]) + f"{capture + CAPTURE_BASE:.6f}".encode()]
        for number, unit in enumerate(units):
            sequence += 1
            out.append((arrival, _datagram("video", "video/h264", epoch, arrival, sequence, timestamp,
                                           number == len(units) - 1, unit)))
    packets = np.arange(int((end - start) * 50 * (1 + AUDIO_PPM)))
    captured = (start + packets * 0.02 / (1 + AUDIO_PPM)).astype(np.float64)
    for index, arrival, capture in zip(packets, _Path(rng, delay).arrivals(captured), captured, strict=True):
        payload = b"\x78" + f"{capture + CAPTURE_BASE:.6f}".encode()  # TOC: config 15 (hybrid FB 20 ms), mono
        out.append((arrival, _datagram("audio", "audio/opus", epoch, arrival, int(index), audio_base + 960 * int(index),
                                       False, payload)))
    out.sort(key=lambda item: item[0])
    return out


def _samples(mp4: bytes) -> dict[int, tuple[np.ndarray, list[bytes]]]:
    """Track id → (each sample's time in seconds on the file's timeline, each sample's bytes)."""
    init, fragments = fmp4.split_file(mp4)
    scales = fmp4.timescales(init)
    times: dict[int, list[float]] = {VIDEO_TRACK: [], AUDIO_TRACK: []}
    data: dict[int, list[bytes]] = {VIDEO_TRACK: [], AUDIO_TRACK: []}
    for fragment in fragments:
        moof = next(box for box in fmp4.boxes(fragment.data) if box.type == b"moof")
        for traf in fmp4.find(moof.body(fragment.data), [b"traf"]):
            track = struct.unpack_from("!I", next(fmp4.find(traf, [b"tfhd"])), 4)[0]
            time = struct.unpack_from("!Q", next(fmp4.find(traf, [b"tfdt"])), 4)[0]
            trun = next(fmp4.find(traf, [b"trun"]))
            flags, (count, offset) = int.from_bytes(trun[1:4], "big"), struct.unpack_from("!Ii", trun, 4)
            stride = 12 if flags & 0x400 else 8
            for entry in range(count):
                duration, size = struct.unpack_from("!II", trun, 12 + entry * stride)
                times[track].append(time / scales[track])
                data[track].append(fragment.data[offset:offset + size])
                time, offset = time + duration, offset + size
    return {track: (np.array(times[track]), data[track]) for track in times}


def _within(capture: np.ndarray, start: float, end: float) -> np.ndarray:
    return (capture >= start + CAPTURE_BASE) & (capture < end + CAPTURE_BASE)


def _video_capture(sample: bytes) -> float:
    position = 0
    while position < len(sample):
        size = int.from_bytes(sample[position:position + 4], "big")
        unit = sample[position + 4:position + 4 + size]
        if unit[0] & 0x1F == FILLER:
            return float(unit[1:])
        position += 4 + size
    raise AssertionError("a video sample lost its capture time")


def test_audio_and_video_stay_within_50_ms_over_an_hour_of_drifting_clocks(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packager, "OpusToAac", _StandInCodecs)
    rng = np.random.default_rng(SEED)
    gop = _gop()
    recording = tmp_path / "shop" / "1.mp4"
    sink = Packager(PackagerConfig(room="shop", show_id=1, hls_directory="", recording=str(recording),
                                   segment_seconds=2.0, poster_seconds=600))
    for epoch, (start, end, delay) in enumerate(((0.0, RECONNECT_AT, 0.04),
                                                 (RECONNECT_AT + RECONNECT_GAP, HOUR, 0.09)), start=1):
        for _arrival, datagram in _source(epoch, start, end, delay, rng, gop):
            sink.handle(datagram)
    sink.close()
    assert not recording.with_suffix(".part1.mp4").exists(), "one part: the reconnect kept the same tracks"

    tracks = _samples(recording.read_bytes())
    video_time, video_data = tracks[VIDEO_TRACK]
    video_error = video_time - np.array([_video_capture(sample) for sample in video_data])
    audio_time, audio_data = tracks[AUDIO_TRACK]
    audio_capture = np.array([struct.unpack("!d", sample)[0] for sample in audio_data])
    assert len(video_time) > 0.99 * HOUR * FPS and len(audio_time) > 0.99 * HOUR * 48000 / 1024

    # Audio against video, wherever there is sound: the offset stays under 50 ms all hour.
    sound = audio_capture > 0
    video_capture = video_time - video_error
    offset = (audio_time - audio_capture)[sound] - np.interp(audio_capture[sound], video_capture, video_error)
    assert np.abs(offset).max() < 0.050, f"A/V offset up to {np.abs(offset).max() * 1000:.1f} ms"
    # Each follows the server's clock (a drift of 180 ms each half hour would show here): once a source's
    # first minute has passed (its starting queue drained), video within milliseconds, audio within the
    # resync tolerance either side.
    audio_error = (audio_time - audio_capture)[sound]
    for start, end in ((0.0, RECONNECT_AT), (RECONNECT_AT + RECONNECT_GAP, HOUR)):
        settled = (start + 60, end)
        video_spread = np.ptp(video_error[_within(video_capture, *settled)])
        audio_spread = np.ptp(audio_error[_within(audio_capture[sound], *settled)])
        assert video_spread < 0.005 and audio_spread < 2 * AUDIO_TOLERANCE + 0.005, (video_spread, audio_spread)

    # The audio track is gapless (frames follow each other) except across the reconnect ...
    steps = np.diff(audio_time)
    frame = 1024 / 48000
    breaks = np.flatnonzero(np.abs(steps - frame) > 1e-6)
    assert len(breaks) == 1 and RECONNECT_GAP - 0.5 < steps[breaks[0]] < RECONNECT_GAP + 0.5, steps[breaks]
    # ... and its content jumps only where a resync moves it, by about the tolerance: for the drift (100 ppm
    # against the server is 360 ms an hour) and, in each source, for the queue it started in draining (the
    # shorter queues later are not followed).
    heard = np.flatnonzero(sound)
    elapsed = np.diff(audio_time[heard])
    jumps = (np.diff(audio_capture[heard]) - elapsed / (1 + AUDIO_PPM))[elapsed < RECONNECT_GAP / 2]
    resyncs = jumps[np.abs(jumps) > 0.001]  # > 0: sound dropped; < 0: silence inserted
    expected = HOUR * abs(AUDIO_PPM) / AUDIO_TOLERANCE + 2 * math.ceil(QUEUE / AUDIO_TOLERANCE)
    assert len(resyncs) <= expected + 2 and np.abs(resyncs).max() < AUDIO_TOLERANCE + SLEW + 0.001, resyncs
    silence = np.count_nonzero(~sound) * frame
    assert silence < -resyncs[resyncs < 0].sum() + 2 * frame, f"{silence:.2f} s of silence inserted"
