"""One clock for a show: RTP timestamps of each kind mapped to the server's wall clock through the arrival
time of the first packet of each epoch, so audio and video line up with each other and with
EXT-X-PROGRAM-DATE-TIME, across publisher reconnects and program switches."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Anchor:
    epoch: int
    timestamp: int
    """Extended (unwrapped) RTP timestamp of the anchor packet."""
    arrival_ns: int
    last: int


@dataclass
class Timeline:
    origin_ns: int | None = None
    """Server time of the show's first packet: time 0 of the output."""
    _anchors: dict[str, _Anchor] = field(default_factory=dict)

    def seconds(self, kind: str, epoch: int, timestamp: int, arrival_ns: int, clock_rate: int) -> float:
        """Output time of an RTP timestamp, in seconds since `origin_ns`."""
        if self.origin_ns is None:
            self.origin_ns = arrival_ns
        anchor = self._anchors.get(kind)
        if anchor is None or anchor.epoch != epoch:
            anchor = self._anchors[kind] = _Anchor(epoch, timestamp, arrival_ns, timestamp)
        # Unwrap: the nearest value to the last one that has these low 32 bits.
        extended = anchor.last + ((timestamp - anchor.last + 0x80000000) % 0x100000000 - 0x80000000)
        anchor.last = extended
        return (anchor.arrival_ns - self.origin_ns) / 1e9 + (extended - anchor.timestamp) / clock_rate

    def wall_ms(self, seconds: float) -> int:
        """Server wall-clock ms of an output time."""
        assert self.origin_ns is not None
        return round(self.origin_ns / 1e6 + seconds * 1000)
