"""The packager of one room's show: a process of its own (`python -m transcode.packager`), fed by a media
worker's tap over loopback UDP. It makes the live HLS stream, the show's recording and the posters, once
per room, whatever the number of viewers; a VP8→H.264 transcode here never competes with the worker's
forwarding loop.

It prints one JSON line, `{"port": N}`, once its socket is bound, and finalises (last segment,
EXT-X-ENDLIST, the recording's last fragment) on SIGTERM or when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

import av
from pydantic import BaseModel, ConfigDict, Field

from config.logs import configure_logging
from config.schema import LoggingSettings
from transcode.encoding import (
    AUDIO_RATE,
    VIDEO_CLOCK,
    EncodedVideo,
    H264Params,
    KeyframeDecoder,
    OpusToAac,
    VideoParams,
    Vp8ToH264,
    opus_channels,
)
from transcode.fmp4 import Fragment
from transcode.fmp4_writer import FragmentWriter, TrackFormat
from transcode.output import POSTER, LiveHls, Recording, write_atomic
from transcode.poster import PosterEncoder
from transcode.rtp import FrameAssembler, TapPacket, parse
from transcode.timeline import Timeline

logger = logging.getLogger("transcode.packager")  # not __name__: that is "__main__" under -m

AUDIO_WAIT = 2.0
"""Seconds of video a new source waits for its audio (held, from its first keyframe) before it starts
without an audio track."""
FRAGMENT_MIN = 0.9
"""A fragment (a segment) closes at the first keyframe after this share of the segment length."""
RECEIVE_BUFFER = 8 * 1024 * 1024
AUDIO_QUEUE = 150
"""Opus packets (3 s) at most waiting for the codecs when no keyframe comes to drain them."""
BATCH_SECONDS = 0.25
"""Datagrams are read in batches this far apart: a wake-up per packet would cost more than the packets
(HLS latency is counted in segments; the socket buffer holds far more than this)."""


class PackagerConfig(BaseModel):
    """Everything the process needs, passed as one JSON argument (nothing secret in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    room: str
    show_id: int
    hls_directory: str
    """This room's live directory ("" for no live HLS)."""
    recording: str
    """The show's MP4 path ("" for no recording)."""
    segment_seconds: float = Field(2.0, gt=0)
    window_segments: int = Field(6, ge=2)
    poster_seconds: float = Field(10.0, gt=0)


class Packager:
    """Tap datagrams in; segments, playlists, the recording and posters out."""

    def __init__(self, config: PackagerConfig) -> None:
        self.config = config
        self.timeline = Timeline()
        self.live = (LiveHls(Path(config.hls_directory), config.segment_seconds, config.window_segments,
                             self.timeline.wall_ms) if config.hls_directory else None)
        self.recording = Recording(Path(config.recording)) if config.recording else None
        self.writer: FragmentWriter | None = None
        self.epoch: int | None = None
        self.assembler: FrameAssembler | None = None
        self.keyframes = KeyframeDecoder()
        self.h264 = H264Params(self.keyframes)
        self.posters = PosterEncoder()
        self.vp8: Vp8ToH264 | None = None
        self.aac: OpusToAac | None = None
        """This source's audio encoder (its channel count is the source's)."""
        self.started = False
        """Whether this epoch's samples go to the writer (from its first keyframe on)."""
        self.audio_epoch: int | None = None
        """The last epoch audio arrived in."""
        self.held: list[tuple[EncodedVideo, bool]] = []
        """This epoch's video from its first keyframe on, while its audio is awaited."""
        self.packets = 0
        self.bad_packets = 0
        self._next_poster = 0.0

    def handle(self, datagram: bytes) -> None:
        packet = parse(datagram)
        if packet is None:
            self.bad_packets += 1
            return
        self.packets += 1
        if packet.epoch != self.epoch:
            self._new_epoch(packet)
        if packet.kind == "audio":
            self._audio(packet)
            return
        assembler = self.assembler
        if assembler is None or assembler.codec != packet.codec:
            assembler = self.assembler = FrameAssembler(packet.codec)
        for frame in assembler.add(packet):
            seconds = self.timeline.seconds("video", packet.epoch, frame.timestamp, frame.arrival_ns, VIDEO_CLOCK)
            self._video(frame.units, seconds, frame.keyframe, packet.codec)

    def _new_epoch(self, packet: TapPacket) -> None:
        """A new program source: its samples start on its first keyframe, after a discontinuity."""
        logger.info("program source changed", extra={"room": self.config.room, "epoch": packet.epoch})
        self._drain_audio()
        self.epoch = packet.epoch
        self.started = False
        self.held = []
        self.assembler = None
        self.aac = None
        self._flush()

    def _video(self, units: list[bytes | memoryview], seconds: float, keyframe: bool, codec: str) -> None:
        if codec == "video/vp8":
            self.vp8 = self.vp8 or Vp8ToH264(self.config.segment_seconds)
            encoded = self.vp8.transcode(bytes(units[0]), seconds, keyframe)
            if self.vp8.last_frame is not None and keyframe:
                self._poster(self.vp8.last_frame, seconds)
        else:
            encoded = [EncodedVideo(units, seconds, keyframe)]
        for video in encoded:
            decoded = self.h264.update(video.units) if video.keyframe else None
            if video.keyframe and codec == "video/h264" and seconds >= self._next_poster:
                self._poster(decoded or self.keyframes.decode(video.units), seconds)
            self._mux_video(video, params_changed=decoded is not None)

    def _mux_video(self, video: EncodedVideo, params_changed: bool) -> None:
        if self.h264.current is None or (not self.started and not self.held and not video.keyframe):
            return
        if not self.started:
            self.held.append((video, params_changed))  # its audio may be a moment behind: wait, a little
            if self.audio_epoch == self.epoch or video.seconds - self.held[0][0].seconds >= AUDIO_WAIT:
                self._release()
            return
        self._write_video(video, params_changed)

    def _release(self) -> None:
        """The held video goes out, now that this source's tracks are known."""
        held, self.held = self.held, []
        for video, params_changed in held:
            self._write_video(video, params_changed)

    def _write_video(self, video: EncodedVideo, params_changed: bool) -> None:
        if video.keyframe:
            self._drain_audio()  # the audio so far belongs to the fragment this keyframe may close
        params = self.h264.current
        assert params is not None
        audio_came = self.writer is not None and self.writer.audio_format is None and self._audio_track() is not None
        if not self.started or params_changed or (video.keyframe and audio_came):
            self._start(params, video.seconds)
        assert self.writer is not None
        fragment = self.writer.add_video(video.units, round(video.seconds * VIDEO_CLOCK), video.keyframe)
        if fragment is not None:
            self._emit(fragment)

    def _audio_track(self) -> TrackFormat | None:
        return self.aac.track() if self.aac is not None and self.audio_epoch == self.epoch else None

    def _start(self, params: VideoParams, seconds: float) -> None:
        """A source's first keyframe, or one with new tracks: the writer goes on when the tracks are the same
        (the live stream gets a new init segment after a discontinuity), else a new writer starts (and with
        it a new part of the recording)."""
        video, audio = params.track(), self._audio_track()
        writer = self.writer
        if writer is None or writer.video_format != video or writer.audio_format != audio:
            self._flush()
            writer = self.writer = FragmentWriter(video, audio, seconds, self.config.segment_seconds * FRAGMENT_MIN)
            if self.recording is not None:
                self.recording.start(writer.init, self.timeline.wall_ms(seconds))
        if self.live is not None:
            self.live.start(writer.init, writer.origin, params, audio is not None)
        self.started = True

    def _flush(self) -> None:
        """The samples the writer holds, as a last fragment (before a new source or new tracks)."""
        fragment = self.writer.flush() if self.writer is not None else None
        if fragment is not None:
            self._emit(fragment)

    def _emit(self, fragment: Fragment) -> None:
        if self.live is not None:
            self.live.add(fragment)
        if self.recording is not None:
            self.recording.add(fragment)

    def _audio(self, packet: TapPacket) -> None:
        if self.aac is None:
            self.aac = OpusToAac(opus_channels(packet.payload))
        self.audio_epoch = packet.epoch
        if self.held:
            self._release()
        seconds = self.timeline.seconds("audio", packet.epoch, packet.timestamp, packet.arrival_ns, AUDIO_RATE)
        self.aac.add(packet.payload, round(seconds * AUDIO_RATE))
        if self.aac.queued >= AUDIO_QUEUE:
            self._drain_audio()

    def _drain_audio(self) -> None:
        """The queued audio, encoded, into the writer: at each keyframe, so a segment's audio is complete
        when it closes, and the codecs run in batches of a segment's packets."""
        frames = self.aac.drain() if self.aac is not None else []
        if self.started and self.writer is not None:
            for data, pts in frames:
                self.writer.add_audio(data, pts)

    def _poster(self, frame: av.VideoFrame | None, seconds: float) -> None:
        if frame is None or seconds < self._next_poster:
            return
        self._next_poster = seconds + self.config.poster_seconds
        jpeg = self.posters.jpeg(frame)
        if jpeg is None:
            return
        if self.live is not None:
            write_atomic(self.live.directory / POSTER, jpeg)
        if self.config.recording:
            path = Path(self.config.recording).with_suffix(".jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, jpeg)

    def close(self) -> None:
        """The show ended (or the server stops): the last fragment, then the live stream's end and the
        recording's."""
        self._drain_audio()
        self._flush()
        if self.live is not None:
            self.live.end()
        if self.recording is not None:
            self.recording.close()
        logger.info("packager finished", extra={"room": self.config.room, "packets": self.packets,
                                                "bad_packets": self.bad_packets})


def serve(config: PackagerConfig, sock: socket.socket, stop: list[bool]) -> None:
    """Until `stop[0]` or stdin closes: read datagrams, package them."""
    packager = Packager(config)
    try:
        while not stop[0]:
            ready, _, _ = select.select([sock, sys.stdin], [], [], 0.5)
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
                break  # the web process went away
            if sock not in ready:
                continue
            for _ in range(1024):
                try:
                    packager.handle(sock.recv(65536))
                except BlockingIOError:
                    break
            time.sleep(BATCH_SECONDS)
    finally:
        packager.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transcode.packager", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="PackagerConfig as JSON")
    parser.add_argument("--logging", default="{}", help="LoggingSettings as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the web process stops us in order
    configure_logging(LoggingSettings.model_validate(json.loads(args.logging)))
    config = PackagerConfig.model_validate(json.loads(args.config))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda _signal, _frame: stop.__setitem__(0, True))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
    started = time.monotonic()
    try:
        serve(config, sock, stop)
    except Exception:
        logger.exception("packager crashed", extra={"room": config.room})
        return 1
    logger.info("packager stopped", extra={"room": config.room, "seconds": round(time.monotonic() - started)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
