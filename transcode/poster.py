"""The poster of a live room and of its recording: a JPEG of a keyframe now and then, at most POSTER_WIDTH
wide."""

from __future__ import annotations

import fractions

import av
import av.error

POSTER_WIDTH = 640


class PosterEncoder:
    """Frames in, JPEGs out. The MJPEG encoder is kept for the room (while the size stays), on one thread:
    a fresh encoder for each poster costs more than the image (its threads, and its buffers faulted in)."""

    def __init__(self) -> None:
        self._encoder: av.VideoCodecContext | None = None
        self._count = 0

    def jpeg(self, frame: av.VideoFrame) -> bytes | None:
        width = min(POSTER_WIDTH, frame.width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width) // 2 * 2)
        encoder = self._encoder_for(width, height)
        try:
            image = frame.reformat(width=width, height=height, format="yuvj420p")
            image.pts = self._count  # MJPEG has no delay: each image comes straight back as its packet
            self._count += 1
            packets = encoder.encode(image)
        except av.error.FFmpegError:
            self._encoder = None
            return None
        return b"".join(bytes(packet) for packet in packets) or None

    def _encoder_for(self, width: int, height: int) -> av.VideoCodecContext:
        encoder = self._encoder
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            created = av.CodecContext.create("mjpeg", "w")
            assert isinstance(created, av.VideoCodecContext)
            created.width, created.height, created.pix_fmt = width, height, "yuvj420p"
            created.time_base = fractions.Fraction(1, 25)
            created.thread_count = 1
            encoder = self._encoder = created
        return encoder
