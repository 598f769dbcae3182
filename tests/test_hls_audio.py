"""Opus → AAC for HLS and recordings: the AAC has the source's channel count and still carries a tone
faithfully (decoded back and compared, no listening needed), and its output stays gapless where the input
has a hole or an overlap."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tests.test_packager import opus_tone
from transcode.encoding import OpusToAac, opus_channels

RATE = 48000
TONE_HZ = 1000


def _transcode(packets: list[bytes], positions: list[int]) -> tuple[OpusToAac, list[tuple[bytes, int]]]:
    aac = OpusToAac(opus_channels(packets[0]))
    frames = [frame for packet, position in zip(packets, positions, strict=True)
              for frame in aac.transcode(packet, position)]
    return aac, frames


def _decode(aac: OpusToAac, frames: list[tuple[bytes, int]]) -> np.ndarray:
    decoder = av.CodecContext.create("aac", "r")
    assert isinstance(decoder, av.AudioCodecContext)
    decoder.extradata = aac.track().audio_config
    decoder.sample_rate, decoder.layout = RATE, aac.layout
    planes = [decoded.to_ndarray() for data, _pts in frames for decoded in decoder.decode(av.Packet(data))]
    return np.concatenate(planes, axis=1)


@pytest.mark.parametrize("channels", [1, 2])
def test_a_tone_survives_in_the_sources_channel_count(channels: int) -> None:
    packets = opus_tone(3, channels, TONE_HZ)
    assert opus_channels(packets[0]) == channels
    aac, frames = _transcode(packets, [index * 960 for index in range(len(packets))])
    assert aac.track().channels == channels and aac.track().audio_config[:2] == bytes(
        [0x11, 0x80 | channels << 3])  # AAC-LC, 48 kHz, channel configuration (ISO/IEC 14496-3 1.6.2.1)
    pcm = _decode(aac, frames)
    assert pcm.shape[0] == channels
    steady = pcm[:, RATE:2 * RATE]  # past the codecs' start-up
    time = np.arange(steady.shape[1]) / RATE
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * time), np.cos(2 * np.pi * TONE_HZ * time)]).T
    for channel in steady:
        fit, *_ = np.linalg.lstsq(basis, channel, rcond=None)
        tone = basis @ fit
        snr = 10 * np.log10(tone.var() / (channel - tone).var())
        assert snr > 30, f"tone SNR {snr:.1f} dB"
        assert abs(np.hypot(*fit) - 0.25) < 0.0125  # the level is kept (a quarter of full scale)


def test_output_stays_gapless_over_a_lost_packet_and_an_overlap() -> None:
    packets = opus_tone(2, 1)
    positions = [index * 960 for index in range(len(packets))]
    del packets[30], positions[30]  # a lost packet: 20 ms of silence keep the rest in place
    positions[60:] = [position - 480 for position in positions[60:]]  # 10 ms early from here: dropped
    aac, frames = _transcode(packets, positions)
    assert aac.filled == 960 and aac.dropped == 480
    pts = [pts for _data, pts in frames]
    assert pts == list(range(pts[0], pts[0] + 1024 * len(pts), 1024)), "AAC frames must follow each other"
    # ... and reach the end, less what the encoder holds back (its delay, a frame ahead, a partial frame)
    assert positions[-1] + 960 - 3 * 1024 < pts[-1] + 1024 <= positions[-1] + 960
