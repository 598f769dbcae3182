"""Pre-encoded media for the benchmark clients: made once with ffmpeg, then only read.

Video: 720p30 VP8 at about 1.4 Mbps from ffmpeg's `testsrc2` pattern, a keyframe every 2 s, no alt-ref frames
(so each packet is one shown frame), in an IVF file. Audio: a 440 Hz sine in Opus, 20 ms packets, in an Ogg
file. The files are cached in the system temp directory under a name derived from the encoding parameters, so
repeated runs (and the smoke test) pay for the encode once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av

WIDTH = 1280
HEIGHT = 720
FPS = 30
VIDEO_KBPS = 1400
KEYFRAME_INTERVAL_S = 2
AUDIO_KBPS = 48
AUDIO_FRAME_MS = 20
FFMPEG_TIMEOUT_S = 300


@dataclass(frozen=True)
class EncodedMedia:
    video: list[tuple[bytes, bool]]
    """VP8 frames in decode order, each with whether it is a keyframe."""
    audio: list[bytes]
    """Opus packets of AUDIO_FRAME_MS each."""

    @property
    def video_kbps(self) -> float:
        seconds = len(self.video) / FPS
        return sum(len(frame) for frame, _ in self.video) * 8 / 1000 / seconds if seconds else 0.0


def vp8_frame_is_keyframe(frame: bytes) -> bool:
    """RFC 6386 section 9.1: bit 0 of the frame tag is 0 on a keyframe."""
    return bool(frame) and not frame[0] & 0x01


def _ffmpeg(args: list[str]) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg)")
    result = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                            capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr.strip()}")


def prepare_media(seconds: int = 12, cache_root: Path | None = None) -> Path:
    """Encode (or find already encoded) video.ivf and audio.ogg; returns their directory."""
    params = f"v1 {WIDTH}x{HEIGHT}@{FPS} vp8 {VIDEO_KBPS}k gop{KEYFRAME_INTERVAL_S}s opus{AUDIO_KBPS}k {seconds}s"
    digest = hashlib.sha256(params.encode()).hexdigest()[:12]
    directory = (cache_root or Path(tempfile.gettempdir())) / f"pinstream-bench-media-{digest}"
    video, audio = directory / "video.ivf", directory / "audio.ogg"
    if video.exists() and audio.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    video_tmp, audio_tmp = directory / f"video.{pid}.ivf", directory / f"audio.{pid}.ogg"
    gop = str(FPS * KEYFRAME_INTERVAL_S)
    rate = f"{VIDEO_KBPS}k"
    _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", str(seconds),
             "-c:v", "libvpx", "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", f"{VIDEO_KBPS // 2}k",
             "-g", gop, "-keyint_min", gop, "-auto-alt-ref", "0", "-lag-in-frames", "0", "-error-resilient", "1",
             "-deadline", "realtime", "-cpu-used", "8", "-threads", "2", "-pix_fmt", "yuv420p", "-f", "ivf",
             str(video_tmp)])
    _ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds), "-ac", "2",
             "-c:a", "libopus", "-b:a", f"{AUDIO_KBPS}k", "-frame_duration", str(AUDIO_FRAME_MS),
             "-application", "audio", "-f", "ogg", str(audio_tmp)])
    video_tmp.replace(video)  # atomic: a concurrent run sees whole files or none
    audio_tmp.replace(audio)
    return directory


def load_media(directory: Path) -> EncodedMedia:
    video: list[tuple[bytes, bool]] = []
    with av.open(str(directory / "video.ivf")) as container:
        for video_packet in container.demux(container.streams.video[0]):
            if video_packet.size:
                data = bytes(video_packet)
                video.append((data, vp8_frame_is_keyframe(data)))
    audio: list[bytes] = []
    with av.open(str(directory / "audio.ogg")) as container:
        for audio_packet in container.demux(container.streams.audio[0]):
            if audio_packet.size:
                audio.append(bytes(audio_packet))
    if not video or not video[0][1]:
        raise RuntimeError(f"{directory / 'video.ivf'}: no frames, or the first is not a keyframe")
    if not audio:
        raise RuntimeError(f"{directory / 'audio.ogg'}: no packets")
    return EncodedMedia(video=video, audio=audio)
