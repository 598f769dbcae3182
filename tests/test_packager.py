"""The packager on its own, fed tap datagrams made here from known media: playlists exact to RFC 8216 as
the window slides over a change of source, old files deleted, audio and video in step, a playable
recording. (tests/test_hls.py runs it as the server does, behind a real media worker.)"""

from __future__ import annotations

import fractions
import json
import os
import re
import subprocess
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder

from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION
from transcode.output import Recording
from transcode.packager import Packager, PackagerConfig
from transcode.recordings import recording_parts, sweep, vod_playlist

FPS = 30
WIDTH, HEIGHT = 320, 240
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _video(seconds: float, width: int = WIDTH, height: int = HEIGHT) -> list[tuple[bytes, bool]]:
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.gop_size = FPS  # a keyframe every second, as the keyframe cadence would ask
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "repeat-headers": "1"}
    frames = []
    for index in range(int(seconds * FPS)):
        image = np.full((height, width, 3), index % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        frames += [(bytes(packet), packet.is_keyframe) for packet in encoder.encode(frame)]
    return frames


def opus_tone(seconds: float, channels: int = 2, frequency: float = 440) -> list[bytes]:
    """20 ms Opus packets of a sine at a quarter of full scale, in `channels` channels (mono: as a browser
    sends a microphone; the TOC byte says which)."""
    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    layout = "stereo" if channels == 2 else "mono"
    encoder.sample_rate, encoder.layout, encoder.format = 48000, layout, "s16"
    encoder.bit_rate = 64_000 * channels
    encoder.time_base = fractions.Fraction(1, 48000)
    packets = []
    for index in range(int(seconds * 50)):
        time = (np.arange(960) + index * 960) / 48000
        tone = (np.sin(2 * np.pi * frequency * time) * 8192).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone] * channels).T.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate, frame.pts = 48000, index * 960
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    return packets



def _datagram(kind: str, codec: str, epoch: int, arrival_ns: int, sequence: int, timestamp: int, marker: bool,
              payload: bytes) -> bytes:
    header = TAP_HEADER.pack(TAP_MAGIC, TAP_VERSION, KINDS[kind], CODECS[codec], 0, epoch, arrival_ns)
    rtp = bytes([0x80, (0x80 if marker else 0) | 96]) + (sequence & 0xFFFF).to_bytes(2, "big")
    return header + rtp + (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + (1).to_bytes(4, "big") + payload


def _tap_stream(video: list[tuple[bytes, bool]], audio: list[bytes], epoch: int, offset_s: float,
                sequences: dict[str, int]) -> list[tuple[int, bytes]]:
    """(arrival ns, datagram) of media starting `offset_s` after START_NS, sequence numbers and RTP clocks
    continuing as a hub keeps them."""
    packer = H264Encoder()
    out = []
    for index, (frame, _key) in enumerate(video):
        packet = av.Packet(frame)
        packet.pts, packet.time_base = index, fractions.Fraction(1, FPS)
        payloads, timestamp = packer.pack(packet)
        arrival = START_NS + int((offset_s + 0.01 + index / FPS) * 1e9)  # its audio is a little ahead
        for number, payload in enumerate(payloads):
            sequences["video"] += 1
            out.append((arrival, _datagram("video", "video/h264", epoch, arrival, sequences["video"],
                                           timestamp + round(offset_s * 90000), number == len(payloads) - 1,
                                           payload)))
    for index, packet_bytes in enumerate(audio):
        arrival = START_NS + int((offset_s + index * 0.02) * 1e9)
        sequences["audio"] += 1
        out.append((arrival, _datagram("audio", "audio/opus", epoch, arrival, sequences["audio"],
                                       index * 960 + round(offset_s * 48000), False, packet_bytes)))
    return sorted(out, key=lambda item: item[0])


def _segments(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line.startswith("seg-")]


def test_playlists_discontinuity_window_and_sync(tmp_path: Path) -> None:
    video, audio = _video(4), opus_tone(4)
    config = PackagerConfig(room="shop", show_id=7, hls_directory=str(tmp_path / "hls"),
                            recording=str(tmp_path / "rec" / "7.mp4"), segment_seconds=1.0, window_segments=3)
    packager = Packager(config)
    sequences = {"video": 0, "audio": 0}
    for _arrival, datagram in _tap_stream(video, audio, 1, 0.0, sequences):
        packager.handle(datagram)
    # The publisher reconnects half a second later: a new epoch.
    reconnected = _tap_stream(video, audio, 2, 4.5, sequences)
    for _arrival, datagram in (item for item in reconnected if item[0] < START_NS + 6 * 10**9):
        packager.handle(datagram)
    hls = tmp_path / "hls"
    playlist = (hls / "media.m3u8").read_text()
    assert playlist.startswith("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n")
    assert "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-2.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:04.5" \
        in playlist, playlist
    assert playlist.count("#EXT-X-PROGRAM-DATE-TIME:") == playlist.count("#EXTINF:") == 3
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in playlist
    # More of the new source: the discontinuity leaves the window, and DISCONTINUITY-SEQUENCE counts it.
    for _arrival, datagram in (item for item in reconnected if item[0] >= START_NS + 6 * 10**9):
        packager.handle(datagram)
    packager.close()
    playlist = (hls / "media.m3u8").read_text()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in playlist and "#EXT-X-DISCONTINUITY\n" not in playlist, playlist
    assert playlist.index('#EXT-X-MAP:URI="init-2.mp4"') < playlist.index("#EXTINF")
    assert playlist.endswith("#EXT-X-ENDLIST\n")
    sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))  # type: ignore[union-attr]
    assert _segments(playlist) == [f"seg-{n}.m4s" for n in range(sequence, sequence + 3)]
    on_disk = sorted(path.name for path in hls.iterdir())
    assert on_disk == sorted([*_segments(playlist), "init-2.mp4", "index.m3u8", "media.m3u8", "poster.jpg"])
    index = (hls / "index.m3u8").read_text()
    assert f"RESOLUTION={WIDTH}x{HEIGHT}" in index and re.search(r'CODECS="avc1\.42[0-9a-f]{4},mp4a\.40\.2"', index)

    # The recording spans both sources; its audio and video start together.
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,start_time,duration",
                            "-of", "json", str(tmp_path / "rec" / "7.mp4")], capture_output=True, text=True,
                           check=True, timeout=30)
    streams = {s["codec_name"]: s for s in json.loads(probe.stdout)["streams"]}
    assert set(streams) == {"h264", "aac"}
    assert abs(float(streams["h264"]["start_time"]) - float(streams["aac"]["start_time"])) < 0.05
    assert abs(float(streams["h264"]["duration"]) - float(streams["aac"]["duration"])) < 0.15
    assert float(streams["h264"]["duration"]) > 8


def test_a_restarted_packager_keeps_the_earlier_part_of_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "shop" / "7.mp4"
    Recording(path).start(b"earlier", 1000)
    restarted = Recording(path)
    restarted.start(b"init", 2000)
    restarted.close()
    assert (tmp_path / "shop" / "7.part1.mp4").read_bytes() == b"earlier"
    assert path.read_bytes() == b"init"
    assert json.loads((tmp_path / "shop" / "7.part1.json").read_text()) == {"origin_ms": 1000}
    assert json.loads((tmp_path / "shop" / "7.json").read_text()) == {"origin_ms": 2000}


def test_a_resolution_change_starts_a_new_init_segment_after_a_discontinuity(tmp_path: Path) -> None:
    config = PackagerConfig(room="shop", show_id=8, hls_directory=str(tmp_path / "hls"), recording="",
                            segment_seconds=1.0, window_segments=6)
    packager = Packager(config)
    sequences = {"video": 0, "audio": 0}
    small = _tap_stream(_video(2), opus_tone(2), 1, 0.0, sequences)
    large = _tap_stream(_video(3, 640, 360), opus_tone(3), 1, 2.0, sequences)  # same source, same epoch
    for _arrival, datagram in [*small, *large]:
        packager.handle(datagram)
    packager.close()
    playlist = (tmp_path / "hls" / "media.m3u8").read_text()
    assert playlist.count("#EXT-X-DISCONTINUITY\n") == 1 and '#EXT-X-MAP:URI="init-2.mp4"' in playlist, playlist
    assert "RESOLUTION=640x360" in (tmp_path / "hls" / "index.m3u8").read_text()


def test_recordings_older_than_the_retention_are_swept(tmp_path: Path) -> None:
    old, new = tmp_path / "shop" / "1.mp4", tmp_path / "shop" / "2.mp4"
    old.parent.mkdir()
    for path in (old, old.with_suffix(".json"), new):
        path.write_bytes(b"x")
    day = 86_400
    os.utime(old, (0, 1_000_000_000 - 31 * day))
    os.utime(old.with_suffix(".json"), (0, 1_000_000_000 - 31 * day))
    assert sweep(str(tmp_path), 30, now=1_000_000_000) == 1
    assert sorted(path.name for path in old.parent.iterdir()) == ["2.mp4"]
    assert sweep(str(tmp_path), 0, now=2_000_000_000) == 0  # 0 keeps them forever


def test_a_recording_in_parts_plays_as_one_playlist_with_a_discontinuity(tmp_path: Path) -> None:
    """After a packager restart, the VOD playlist plays the earlier part, then the main file."""
    mp4 = tmp_path / "shop" / "7.mp4"
    mp4.parent.mkdir()
    for path, origin in ((mp4.with_suffix(".part1.mp4"), 1_700_000_000_000), (mp4, 1_700_000_060_000)):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=10",
                        "-c:v", "libx264", "-g", "10", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
                        str(path)], check=True, timeout=60)
        path.with_suffix(".json").write_text(json.dumps({"origin_ms": origin}))
    assert [name for name, _path in recording_parts(mp4)] == ["part1.mp4", "recording.mp4"]
    text = vod_playlist(mp4)
    assert text is not None and text.endswith("#EXT-X-ENDLIST\n")
    lines = text.splitlines()
    maps = [line.split('"')[1] for line in lines if line.startswith("#EXT-X-MAP")]
    assert maps == ["part1.mp4", "recording.mp4"]
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    first_of_second = lines.index("#EXT-X-DISCONTINUITY") + 2
    assert lines[first_of_second] == "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000Z"
    assert lines[-2] == "recording.mp4" and "part1.mp4" in lines
    mp4.with_suffix(".part1.mp4").unlink()
    assert "#EXT-X-DISCONTINUITY\n" not in (vod_playlist(mp4) or "")


def _channels(path: Path) -> list[int]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=channels",
                            "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=30)
    return [int(stream["channels"]) for stream in json.loads(probe.stdout)["streams"]]


def test_aac_has_the_channel_count_of_each_source(tmp_path: Path) -> None:
    """A browser's mono microphone becomes mono AAC; a later source in stereo (OBS) gets a new init segment
    after a discontinuity, and the recording a new part, since a track cannot change its channel count."""
    config = PackagerConfig(room="shop", show_id=9, hls_directory=str(tmp_path / "hls"),
                            recording=str(tmp_path / "rec" / "9.mp4"), segment_seconds=1.0, window_segments=10)
    packager = Packager(config)
    sequences = {"video": 0, "audio": 0}
    for _arrival, datagram in [*_tap_stream(_video(3), opus_tone(3, channels=1), 1, 0.0, sequences),
                               *_tap_stream(_video(3), opus_tone(3, channels=2), 2, 3.5, sequences)]:
        packager.handle(datagram)
    packager.close()
    hls = tmp_path / "hls"
    playlist = (hls / "media.m3u8").read_text()
    assert playlist.count("#EXT-X-DISCONTINUITY\n") == 1 and '#EXT-X-MAP:URI="init-2.mp4"' in playlist, playlist
    first = playlist.split("#EXT-X-DISCONTINUITY\n")[0]
    segment = next(line for line in first.splitlines() if line.startswith("seg-"))
    (tmp_path / "mono.mp4").write_bytes((hls / "init-1.mp4").read_bytes() + (hls / segment).read_bytes())
    assert _channels(tmp_path / "mono.mp4") == [1]
    assert [name for name, _path in recording_parts(tmp_path / "rec" / "9.mp4")] == ["part1.mp4", "recording.mp4"]
    assert _channels(tmp_path / "rec" / "9.part1.mp4") == [1] and _channels(tmp_path / "rec" / "9.mp4") == [2]
