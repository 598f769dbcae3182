"""One clock for a show: the RTP timestamps of each kind mapped to the server's clock, so audio and video line
up with each other and with EXT-X-PROGRAM-DATE-TIME, across publisher reconnects and program switches, and
stay so over hours although a publisher's sound card and camera clocks drift against each other and against
the server's (±100 ppm is 360 ms an hour).

The tap gives no RTCP sender reports, only each packet's arrival time at the worker. A packet can arrive
late (jitter, a queue) but never early, so the mapping of a kind's RTP clock follows the *earliest* arrivals:
each second, the lowest "arrival minus media time" of the last `WINDOW` seconds is the target, and the
mapping's offset is steered towards it by at most `SLEW` per second. A clock that drifts is followed; a
passing queue (a few seconds of congestion) is not. In the first `WARMUP` seconds of a source the offset
jumps to the target instead (the first packet, which anchors it, may itself have come late).

Video uses the steered offset as it is (a frame's time moves by a few microseconds). Audio must stay
gapless, so its offset only moves once the steered one is more than `AUDIO_TOLERANCE` away; the AAC
encoder then inserts or drops that much (transcode/encoding.py). Audio and video therefore stay within
`AUDIO_TOLERANCE` of each other, plus what the two estimates differ by.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SECOND_NS = 1_000_000_000
WINDOW = 10
"""Seconds of arrivals whose earliest gives a clock's target offset."""
SLEW = 0.002
"""Seconds of correction per second at most (2000 ppm): far above a real clock's drift, and invisible."""
WARMUP = 2
"""Seconds of a new source in which the offset jumps straight to its target."""
AUDIO_TOLERANCE = 0.040
"""How far audio may be from its steered mapping before it is re-synchronised."""
TOLERANCE = {"audio": AUDIO_TOLERANCE, "video": 0.0}


@dataclass
class SourceClock:
    """One kind's RTP clock in one epoch (one program source)."""

    rate: int
    base: int
    """Extended (unwrapped) RTP timestamp of the first packet."""
    offset: float
    """Steered output time of `base`, seconds since the show's time 0."""
    tolerance: float
    applied: float = math.nan
    """The offset in use: `offset` for video; for audio, moved only when `offset` is `tolerance` away."""
    last: int = 0
    seconds_seen: int = 0
    bucket_end_ns: int = 0
    bucket_min: float = math.inf
    window: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    resyncs: int = 0

    def __post_init__(self) -> None:
        self.applied = self.offset
        self.last = self.base

    def media(self, timestamp: int) -> int:
        """The extended timestamp: the nearest one to the last that has these low 32 bits."""
        extended = self.last + ((timestamp - self.last + 0x80000000) % 0x100000000 - 0x80000000)
        self.last = extended
        return extended

    def observe(self, arrival_ns: int, arrival: float, media: float) -> None:
        """One packet: its arrival (seconds since time 0) against its media time (seconds since `base`)."""
        observed = arrival - media
        if observed < self.bucket_min:
            self.bucket_min = observed
        if arrival_ns >= self.bucket_end_ns:
            self._steer(arrival_ns)

    def _steer(self, arrival_ns: int) -> None:
        if self.bucket_end_ns:  # a second of arrivals is complete
            self.window.append(self.bucket_min)
            self.seconds_seen += 1
            error = min(self.window) - self.offset
            self.offset += error if self.seconds_seen <= WARMUP else max(-SLEW, min(SLEW, error))
            if abs(self.offset - self.applied) > self.tolerance:
                self.applied = self.offset
                self.resyncs += self.tolerance > 0
        self.bucket_min = math.inf
        self.bucket_end_ns = arrival_ns + SECOND_NS


@dataclass
class Timeline:
    origin_ns: int | None = None
    """Server time of the show's first packet: time 0 of the output."""
    clocks: dict[str, tuple[int, SourceClock]] = field(default_factory=dict)
    """Each kind's clock, with the epoch it belongs to."""

    def seconds(self, kind: str, epoch: int, timestamp: int, arrival_ns: int, clock_rate: int) -> float:
        """Output time of an RTP timestamp, in seconds since `origin_ns`."""
        if self.origin_ns is None:
            self.origin_ns = arrival_ns
        arrival = (arrival_ns - self.origin_ns) / SECOND_NS
        current = self.clocks.get(kind)
        if current is None or current[0] != epoch:
            clock = SourceClock(clock_rate, timestamp, arrival, TOLERANCE[kind])
            self.clocks[kind] = (epoch, clock)
        else:
            clock = current[1]
        media = (clock.media(timestamp) - clock.base) / clock.rate
        clock.observe(arrival_ns, arrival, media)
        return media + clock.applied

    def wall_ms(self, seconds: float) -> int:
        """Server wall-clock ms of an output time."""
        assert self.origin_ns is not None
        return round(self.origin_ns / 1e6 + seconds * 1000)
