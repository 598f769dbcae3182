"""The codecs Pinstream forwards, and reading a keyframe start straight from an RTP payload.

Forwarding never decodes: a new viewer is let in on the first packet of a keyframe, which is recognised
from the payload's first bytes (VP8 payload descriptor and frame tag; H.264 NAL unit types).
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability

OPUS = RTCRtpCodecCapability(mimeType="audio/opus", clockRate=48000, channels=2)
VP8 = RTCRtpCodecCapability(mimeType="video/VP8", clockRate=90000)
H264_CONSTRAINED_BASELINE = RTCRtpCodecCapability(
    mimeType="video/H264", clockRate=90000,
    parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42e01f"})
H264_BASELINE = RTCRtpCodecCapability(
    mimeType="video/H264", clockRate=90000,
    parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42001f"})

FORWARDABLE: dict[str, list[RTCRtpCodecCapability]] = {
    "audio": [OPUS],
    "video": [H264_CONSTRAINED_BASELINE, H264_BASELINE, VP8],
}

# H.264 NAL unit types that begin a decodable picture: IDR slice, SPS.
_H264_KEY_NALS = (5, 7)
_STAP_A, _FU_A = 24, 28


def is_keyframe_start(mime_type: str, payload: bytes) -> bool:
    """True when this payload carries the start of a keyframe (for H.264: an SPS or IDR slice)."""
    if not payload:
        return False
    kind = mime_type.lower()
    if kind == "video/vp8":
        return _vp8_keyframe_start(payload)
    if kind == "video/h264":
        return _h264_keyframe_start(payload)
    return False


def _vp8_keyframe_start(payload: bytes) -> bool:
    # RFC 7741 payload descriptor: X R N S R PID(3); keyframes start a partition 0 (S=1, PID=0).
    first = payload[0]
    if not first & 0x10 or first & 0x07:
        return False
    index = 1
    if first & 0x80:  # extension byte follows: I L T K
        if len(payload) < 2:
            return False
        extension = payload[1]
        index = 2
        if extension & 0x80:  # picture id, 7 or 15 bits
            if len(payload) <= index:
                return False
            index += 2 if payload[index] & 0x80 else 1
        if extension & 0x40:  # TL0PICIDX
            index += 1
        if extension & 0x30:  # TID/KEYIDX
            index += 1
    # VP8 frame tag: the lowest bit of its first byte is 0 for a key frame.
    return len(payload) > index and not payload[index] & 0x01


def _h264_keyframe_start(payload: bytes) -> bool:
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_NALS:
        return True
    if nal_type == _STAP_A:
        index = 1
        while index + 2 < len(payload):
            size = int.from_bytes(payload[index:index + 2], "big")
            if payload[index + 2] & 0x1F in _H264_KEY_NALS:
                return True
            index += 2 + size
        return False
    if nal_type == _FU_A and len(payload) > 1:
        header = payload[1]
        return bool(header & 0x80) and header & 0x1F in _H264_KEY_NALS
    return False
