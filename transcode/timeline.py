"""One clock for a show: the RTP timestamps of each kind mapped to the server's clock, so audio and video line
up with each other and with EXT-X-PROGRAM-DATE-TIME, across publisher reconnects and program switches, and
stay so over hours although a publisher's sound card and camera clocks drift against each other and against
the server's (±100 ppm is 360 ms an hour).

The tap gives no RTCP sender reports, only each packet's arrival time at the worker. A packet can arrive
late (jitter, a queue) but never early, so the mapping of a kind's RTP clock follows the *earliest* arrivals:
each second, the lowest "arrival minus media time" of the last `WINDOW` seconds is the target, and for the
next second the mapping's offset moves towards it, smoothly, by at most `SLEW` per second. A clock that
drifts is followed; a passing queue (congestion shorter than the window) is not; the first packet, which
anchors the mapping, may have come late, which the first seconds correct. Every kind is steered at the same
moments and at the same rate, so what moves them both (the network) keeps them together.

Video uses the steered offset as it is (a frame's time moves by at most `SLEW` of its duration). Audio must
stay gapless, so its offset only moves once the steered one is more than `AUDIO_TOLERANCE` away; the AAC
encoder then inserts or drops that much (transcode/encoding.py). Audio and video therefore stay within
`AUDIO_TOLERANCE` of each other, plus what the two estimates differ by (a millisecond or two; while a long
queue drains, their drift against each other for the few seconds the slew takes).
tests/test_hls_sync.py holds it to 50 ms over an hour of drifting clocks, jitter, congestion and a reconnect.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SECOND_NS = 1_000_000_000
WINDOW = 10
"""Seconds of arrivals whose earliest gives a clock's target offset."""
SLEW = 0.01
"""Seconds of correction per second at most (1 %): a hundred times a real clock's drift, and invisible in
video (a frame lasts up to 1 % longer or shorter while it lasts)."""
AUDIO_TOLERANCE = 0.030
"""How far audio may be from its steered mapping before it is re-synchronised: at a drift of 100 ppm against
the server's clock, 30 ms of silence inserted or of sound dropped every five minutes."""
TOLERANCE = {"audio": AUDIO_TOLERANCE, "video": 0.0}


@dataclass
class SourceClock:
    """One kind's RTP clock in one epoch (one program source)."""

    rate: int
    base: int
    """Extended (unwrapped) RTP timestamp of the first packet."""
    offset: float
    """Steered output time of `base` (seconds since the show's time 0) as of `since`."""
    tolerance: float
    since: float
    """Arrival time (seconds since time 0) of the last steering."""
    slope: float = 0.0
    """How fast `offset` moves until the next steering (seconds per second)."""
    applied: float = math.nan
    """The offset in use for audio: moved to the steered one only when that is `tolerance` away."""
    last: int = 0
    bucket_min: float = math.inf
    """Lowest arrival minus media time since the last steering."""
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

    def output(self, media: float, arrival: float) -> float:
        """Output time of a packet: its media time (seconds since `base`) plus the offset, as steered at its
        arrival (seconds since time 0)."""
        observed = arrival - media
        if observed < self.bucket_min:
            self.bucket_min = observed
        if self.tolerance:
            return media + self.applied
        return media + self.offset + self.slope * (arrival - self.since)

    def steer(self, arrival: float) -> None:
        """A second has passed: aim at the earliest arrivals of the window, at most `SLEW` per second."""
        self.offset += self.slope * (arrival - self.since)
        self.since, self.slope = arrival, 0.0
        if self.bucket_min < math.inf:
            self.window.append(self.bucket_min)
            self.bucket_min = math.inf
        if not self.window:
            return
        self.slope = max(-SLEW, min(SLEW, min(self.window) - self.offset))
        if self.tolerance and abs(self.offset + self.slope - self.applied) > self.tolerance:
            self.applied = self.offset + self.slope
            self.resyncs += 1


@dataclass
class Timeline:
    origin_ns: int | None = None
    """Server time of the show's first packet: time 0 of the output."""
    clocks: dict[str, tuple[int, SourceClock]] = field(default_factory=dict)
    """Each kind's clock, with the epoch it belongs to."""
    steer_ns: int = 0
    """When every clock is steered next."""

    def seconds(self, kind: str, epoch: int, timestamp: int, arrival_ns: int, clock_rate: int) -> float:
        """Output time of an RTP timestamp, in seconds since `origin_ns`."""
        if self.origin_ns is None:
            self.origin_ns = arrival_ns
        arrival = (arrival_ns - self.origin_ns) / SECOND_NS
        if arrival_ns >= self.steer_ns:
            for _epoch, each in self.clocks.values():
                each.steer(arrival)
            self.steer_ns = arrival_ns + SECOND_NS
        current = self.clocks.get(kind)
        if current is None or current[0] != epoch:
            clock = SourceClock(clock_rate, timestamp, arrival, TOLERANCE[kind], arrival)
            self.clocks[kind] = (epoch, clock)
        else:
            clock = current[1]
        return clock.output((clock.media(timestamp) - clock.base) / clock.rate, arrival)

    def wall_ms(self, seconds: float) -> int:
        """Server wall-clock ms of an output time."""
        assert self.origin_ns is not None
        return round(self.origin_ns / 1e6 + seconds * 1000)
