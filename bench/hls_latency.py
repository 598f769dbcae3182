#!/usr/bin/env python3
"""HLS benchmark: publisher-to-segment latency and packager CPU, remux (H.264) against transcode (VP8).

    python bench/hls_latency.py [--seconds S] [--warmup W] [--segment-seconds D] [--audio-signal voice|tone]

Six rooms run side by side, each with its own real packager process (`python -m transcode.packager`, live
HLS plus recording, as the server runs it), in pairs: one fed 720p30 H.264, which it remuxes, one fed
720p30 VP8, which it decodes and encodes to H.264 (x264 `veryfast`, at the bit rate the packager picks).
The pairs differ in their audio, encoded to AAC: mono Opus at 32 kbit/s (what a browser tab sends from a
microphone: the product's main host path, the headline ratio), stereo Opus at 128 kbit/s (what OBS sends),
and none. Pre-encoded media (ffmpeg, cached in the temp directory) is packetised with aiortc's packetisers
and sent as tap datagrams, paced in real time, exactly what a media worker's tap sends (media/tap.py); the
SFU path itself is measured by sfu_fanout.py.

- latency: for every video frame, from its send time to the moment a segment holding it is listed in the
  live media playlist (so a player can fetch it); p50/p99 per room, target at most segment duration + 1 s;
- CPU: utime + stime of each packager process over the steady-state window, per second of media, and
  each remux room's CPU as a fraction of its transcode room's (target at most 5%): `cpu_ratio` (mono
  audio), `cpu_ratio_stereo_audio`, `cpu_ratio_video_only`.

Human-readable lines first; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import fractions
import hashlib
import json
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc.codecs.h264 import H264Encoder  # noqa: E402
from aiortc.codecs.vpx import Vp8Encoder  # noqa: E402

from bench.analysis import percentile  # noqa: E402
from bench.media_files import (  # noqa: E402
    AUDIO_SIGNALS,
    FPS,
    HEIGHT,
    KEYFRAME_INTERVAL_S,
    VIDEO_KBPS,
    WIDTH,
    _ffmpeg,
    load_media,
    load_opus,
    prepare_audio,
    prepare_media,
)
from bench.procstat import cpu_seconds  # noqa: E402
from media.supervisor import child_environment  # noqa: E402
from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION  # noqa: E402

AUDIO_PACKET_S = 0.02
LATENCY_TARGET_EXTRA_S = 1.0
CPU_RATIO_TARGET = 0.05
POLL_S = 0.01
_RTP = struct.Struct("!BBHII")


def prepare_h264(seconds: int) -> Path:
    """720p30 H.264 constrained baseline in Annex B, a keyframe every 2 s, cached like prepare_media."""
    params = f"v1 {WIDTH}x{HEIGHT}@{FPS} h264 {VIDEO_KBPS}k gop{KEYFRAME_INTERVAL_S}s {seconds}s"
    path = Path(tempfile.gettempdir()) / f"pinstream-bench-h264-{hashlib.sha256(params.encode()).hexdigest()[:12]}.h264"
    if not path.exists():
        temporary = path.with_suffix(f".{os.getpid()}.h264")
        gop = str(FPS * KEYFRAME_INTERVAL_S)
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", str(seconds),
                 "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-tune", "zerolatency",
                 "-b:v", f"{VIDEO_KBPS}k", "-g", gop, "-keyint_min", gop, "-x264-params", "repeat-headers=1",
                 "-pix_fmt", "yuv420p", "-f", "h264", str(temporary)])
        temporary.replace(path)
    return path


def load_h264(path: Path) -> list[bytes]:
    with av.open(str(path), format="h264") as container:
        return [bytes(packet) for packet in container.demux(container.streams.video[0]) if packet.size]


@dataclass
class Room:
    name: str
    codec: str
    frames: list[bytes]
    directory: Path
    audio: list[bytes] | None
    """Opus packets of AUDIO_PACKET_S each, looped; None for a room without audio."""
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    sent_ns: list[int] = field(default_factory=list)
    """Send time of every video frame, in order."""
    seen: dict[str, int] = field(default_factory=dict)
    """Segment URI → when it first appeared in the playlist."""
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0

    def start(self, segment_seconds: float) -> None:
        config = {"room": self.name, "show_id": 1, "hls_directory": str(self.directory / "hls"),
                  "recording": str(self.directory / "recording.mp4"), "segment_seconds": segment_seconds}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "transcode.packager", "--config", json.dumps(config),
             "--logging", json.dumps({"level": "warning"})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_environment())
        assert self.process.stdout is not None
        self.port = int(json.loads(self.process.stdout.readline())["port"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _datagram(kind: str, codec: str, sequence: int, timestamp: int, marker: bool, payload: bytes) -> bytes:
    header = TAP_HEADER.pack(TAP_MAGIC, TAP_VERSION, KINDS[kind], CODECS[codec], 0, 1, time.time_ns())
    rtp = _RTP.pack(0x80, (0x80 if marker else 0) | (96 if kind == "video" else 111), sequence & 0xFFFF,
                    timestamp & 0xFFFFFFFF, 1)
    return header + rtp + payload


async def send(rooms: list[Room], seconds: float) -> None:
    """Video at FPS and Opus every 20 ms to every room, paced against the clock, looping the clips."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    packers = {room.name: H264Encoder() if room.codec == "video/h264" else Vp8Encoder() for room in rooms}
    sequences = {(room.name, kind): 0 for room in rooms for kind in KINDS}
    start = time.monotonic()
    video_index = audio_index = 0
    while time.monotonic() - start < seconds:
        next_video, next_audio = start + video_index / FPS, start + audio_index * AUDIO_PACKET_S
        await asyncio.sleep(max(0.0, min(next_video, next_audio) - time.monotonic()))
        if next_video <= next_audio:
            for room in rooms:
                packet = av.Packet(room.frames[video_index % len(room.frames)])
                packet.pts, packet.time_base = video_index * (90000 // FPS), fractions.Fraction(1, 90000)
                payloads, timestamp = packers[room.name].pack(packet)
                room.sent_ns.append(time.time_ns())
                for index, payload in enumerate(payloads):
                    sequence = sequences[room.name, "video"]
                    sequences[room.name, "video"] += 1
                    sock.sendto(_datagram("video", room.codec, sequence, timestamp, index == len(payloads) - 1,
                                          payload), ("127.0.0.1", room.port))
            video_index += 1
        else:
            for room in rooms:
                if room.audio is None:
                    continue
                sequence = sequences[room.name, "audio"]
                sequences[room.name, "audio"] += 1
                sock.sendto(_datagram("audio", "audio/opus", sequence, audio_index * 960, False,
                                      room.audio[audio_index % len(room.audio)]), ("127.0.0.1", room.port))
            audio_index += 1
    sock.close()


async def watch(rooms: list[Room], until: asyncio.Event) -> None:
    """Note when each segment first shows up in its room's live playlist."""
    while not until.is_set():
        now = time.time_ns()
        for room in rooms:
            try:
                text = (room.directory / "hls" / "media.m3u8").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("seg-") and line not in room.seen:
                    room.seen[line] = now
                    _segment_latencies(room, text, line, now)
        await asyncio.sleep(POLL_S)


def _segment_latencies(room: Room, playlist: str, uri: str, seen_ns: int) -> None:
    lines = playlist.splitlines()
    index = lines.index(uri)
    start_ms = duration = None
    for line in reversed(lines[:index]):
        if line.startswith("#EXTINF:") and duration is None:
            duration = float(line.split(":", 1)[1].rstrip(","))
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            start_ms = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp() * 1000
            break
    if start_ms is None or duration is None:
        return
    first = bisect.bisect_left(room.sent_ns, int(start_ms * 1e6) - 5_000_000)  # 5 ms: arrival after send
    last = bisect.bisect_left(room.sent_ns, int((start_ms + duration * 1000) * 1e6) - 5_000_000)
    room.latencies.extend((seen_ns - sent) / 1e9 for sent in room.sent_ns[first:last])


ROOMS = ("remux", "transcode", "remux_stereo", "transcode_stereo", "remux_video_only", "transcode_video_only")
MONO_KBPS = 32
"""Chrome's Opus bit rate for a mono microphone."""
STEREO_KBPS = 128


async def run(seconds: float, warmup: float, segment_seconds: float, signal: str) -> dict[str, Any]:
    # A whole number of GOPs, so the looped clip keeps its keyframe rhythm (and its segments their length).
    clip = KEYFRAME_INTERVAL_S * math.ceil(max(12, min(seconds + warmup, 30)) / KEYFRAME_INTERVAL_S)
    vp8 = load_media(prepare_media(clip))
    h264 = load_h264(prepare_h264(clip))
    audio = {"": load_opus(prepare_audio(signal, 1, MONO_KBPS, clip)),
             "_stereo": load_opus(prepare_audio(signal, 2, STEREO_KBPS, clip)), "_video_only": None}
    with tempfile.TemporaryDirectory(prefix="pinstream-hls-bench-") as work:
        vp8_frames = [frame for frame, _key in vp8.video]
        rooms = [Room(f"{kind}{suffix}", codec, frames, Path(work) / f"{kind}{suffix}", packets)
                 for suffix, packets in audio.items()
                 for kind, codec, frames in (("remux", "video/h264", h264), ("transcode", "video/vp8", vp8_frames))]
        assert tuple(room.name for room in rooms) == ROOMS
        try:
            for room in rooms:
                room.start(segment_seconds)
            done = asyncio.Event()
            watcher = asyncio.create_task(watch(rooms, done))
            sender = asyncio.create_task(send(rooms, warmup + seconds + 2 * segment_seconds + 1))
            await asyncio.sleep(warmup)
            for room in rooms:
                room.latencies.clear()
            assert all(room.process is not None for room in rooms)
            before = [cpu_seconds([room.process.pid]) for room in rooms if room.process is not None]
            await asyncio.sleep(seconds)
            after = [cpu_seconds([room.process.pid]) for room in rooms if room.process is not None]
            for room, start_cpu, end_cpu in zip(rooms, before, after, strict=True):
                room.cpu = (end_cpu - start_cpu) / seconds
            measured = {room.name: len(room.latencies) for room in rooms}
            await sender  # frames sent in the window land in segments listed a little later
            done.set()
            await watcher
        finally:
            for room in rooms:
                room.stop()
    return _report(rooms, measured, seconds, segment_seconds, signal)


def _ratio(remux: Room, transcode: Room) -> float | None:
    return round(remux.cpu / transcode.cpu, 4) if transcode.cpu > 0 else None


def _report(rooms: list[Room], measured: dict[str, int], seconds: float, segment_seconds: float,
            signal: str) -> dict[str, Any]:
    target_s = segment_seconds + LATENCY_TARGET_EXTRA_S
    remux, transcode, remux_stereo, transcode_stereo, remux_video, transcode_video = rooms
    ratios = {"cpu_ratio": _ratio(remux, transcode), "cpu_ratio_stereo_audio": _ratio(remux_stereo, transcode_stereo),
              "cpu_ratio_video_only": _ratio(remux_video, transcode_video)}
    latency = {}
    for room in rooms:
        p50, p99 = percentile(room.latencies, 0.5), percentile(room.latencies, 0.99)
        latency[room.name] = {"p50_ms": _ms(p50), "p99_ms": _ms(p99), "frames": len(room.latencies),
                              "frames_at_window_end": measured[room.name]}
        print(f"{room.name:>20}: frame sent -> fetchable in a segment p50 {_ms(p50)} ms, p99 {_ms(p99)} ms "
              f"({len(room.latencies)} frames); packager CPU {room.cpu * 100:.1f}% of a core", flush=True)
    print("remux CPU / transcode CPU per room: " + ", ".join(f"{key} = {value}" for key, value in ratios.items()))
    return {
        "bench": "hls_latency", "seconds": seconds, "segment_seconds": segment_seconds,
        "video": f"{WIDTH}x{HEIGHT}@{FPS} {VIDEO_KBPS} kbps",
        "audio": {"signal": signal, "mono_opus_kbps": MONO_KBPS, "stereo_opus_kbps": STEREO_KBPS},
        "latency": latency, "latency_target_ms": round(target_s * 1000),
        "latency_ok": all((percentile(r.latencies, 0.99) or 1e9) <= target_s for r in rooms),
        "cpu_cores": {room.name: round(room.cpu, 4) for room in rooms},
        **ratios, "cpu_ratio_target": CPU_RATIO_TARGET,
        **{f"{key}_ok": value is not None and value <= CPU_RATIO_TARGET for key, value in ratios.items()},
    }


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 1) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state window")
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--audio-signal", choices=AUDIO_SIGNALS, default="voice",
                        help="what the Opus carries: speech over a noise floor (a host's microphone), or a pure tone")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.seconds, args.warmup, args.segment_seconds, args.audio_signal))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
