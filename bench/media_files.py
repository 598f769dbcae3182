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


VOICE_TEXT = (
    "Welcome back everyone, and thank you for joining the show. Today we have three vintage denim jackets, a "
    "leather weekend bag, and two pairs of very rare sneakers in size nine and ten. Keep an eye on the countdown: "
    "the flash sale starts in two minutes, stock is limited, and every order is first come, first served. Questions "
    "go in the chat, and I will read them out between the items.")
AUDIO_SIGNALS = ("voice", "tone")
"""voice: synthetic speech (ffmpeg's flite) over a pink-noise floor, what a host's microphone gives; tone: a
440 Hz sine, a worst case for AAC encoders (they iterate their rate control on a signal this sparse)."""


def prepare_audio(signal: str, channels: int, kbps: int, seconds: int, cache_root: Path | None = None) -> Path:
    """An Ogg Opus file (48 kHz, 20 ms packets) of `signal` in `channels` channels, cached like prepare_media.
    In stereo, the voice sits in the middle of noise that differs per channel (a room, not a copied mono)."""
    if signal not in AUDIO_SIGNALS or channels not in (1, 2):
        raise ValueError(f"signal must be one of {AUDIO_SIGNALS}, channels 1 or 2")
    params = f"v1 {signal} {channels}ch opus{kbps}k {seconds}s"
    digest = hashlib.sha256(f"{params} {VOICE_TEXT}".encode()).hexdigest()[:12]
    path = (cache_root or Path(tempfile.gettempdir())) / f"pinstream-bench-audio-{digest}.ogg"
    if path.exists():
        return path
    temporary = path.with_suffix(f".{os.getpid()}.ogg")
    if signal == "tone":
        sources = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        graph = f"[0]aformat=channel_layouts={'stereo' if channels == 2 else 'mono'}[out]"
    else:
        text = VOICE_TEXT.replace(",", "\\,").replace(":", "\\:")
        sources = ["-f", "lavfi", "-i", f"flite=text='{text}':voice=slt"]
        for seed in range(channels):
            sources += ["-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.004:sample_rate=48000:seed={seed + 1}"]
        noise = "[1][2]amerge=inputs=2[noise]" if channels == 2 else "[1]anull[noise]"
        layout = "stereo" if channels == 2 else "mono"
        graph = (f"[0]aresample=48000,aformat=channel_layouts={layout},aloop=loop=-1:size=2000000[voice];{noise};"
                 "[voice][noise]amix=inputs=2:normalize=0[out]")
    _ffmpeg([*sources, "-filter_complex", graph, "-map", "[out]", "-t", str(seconds), "-ac", str(channels),
             "-c:a", "libopus", "-b:a", f"{kbps}k", "-frame_duration", str(AUDIO_FRAME_MS),
             "-application", "voip" if channels == 1 else "audio", "-f", "ogg", str(temporary)])
    temporary.replace(path)
    return path


def load_opus(path: Path) -> list[bytes]:
    """The Opus packets of an Ogg file, in order."""
    with av.open(str(path)) as container:
        packets = [bytes(packet) for packet in container.demux(container.streams.audio[0]) if packet.size]
    if not packets:
        raise RuntimeError(f"{path}: no packets")
    return packets


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
