"""Matching what viewers received to what the publisher sent, and the figures derived from it.

The publisher logs every video frame as (pts, send time, keyframe); its RTP timestamp on a leg is that leg's
random origin plus pts (mod 2^32). A viewer logs frames by the RTP timestamp it received. A server that keeps
timestamps (Pinstream for now) lets a viewer's frame be found at origin + pts. A server that rewrites them
(Janus, the re-encoding relay) adds a constant offset instead; since the publisher varies frame durations
slightly from a fixed seed, only the true offset maps a run of received timestamps onto sent ones, and it is
found by voting over plausible (received, sent) pairs. A server that decodes and re-encodes may round a
timestamp by a tick (the naive relay does), so matches allow TOLERANCE_TICKS either way; frames are about
3000 ticks apart, so this cannot pair the wrong frames.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MOD = 2**32
SAMPLE_FRAMES = 60
MAX_PLAUSIBLE_LATENCY_S = 8.0
TOLERANCE_TICKS = 2
NEAR = sorted(range(-TOLERANCE_TICKS, TOLERANCE_TICKS + 1), key=abs)

PublishedFrame = tuple[int, float, bool]
"""(pts in 1/90000, monotonic send time, keyframe)"""
ReceivedFrame = Sequence[Any]
"""(RTP timestamp, arrival, packets, first seq, marker seq, start seen, keyframe): see FrameRecorder."""


def complete(frame: ReceivedFrame) -> bool:
    """Its first packet, its marker packet and every packet in between arrived."""
    _, _, packets, first_seq, last_seq, start_seen, _ = frame
    return bool(start_seen) and packets == (last_seq - first_seq) % 65536 + 1


def find_offset(published: Sequence[PublishedFrame], received: Sequence[ReceivedFrame],
                origin: int | None) -> tuple[int | None, bool]:
    """(offset such that RTP timestamp = pts + offset mod 2^32, whether the server rewrote timestamps)."""
    if not received or not published:
        return None, False
    pts_set = {pts % MOD for pts, _, _ in published}
    middle = len(received) // 3
    sample = list(received[middle:middle + SAMPLE_FRAMES])
    if origin is not None:
        hits = sum((frame[0] - origin) % MOD in pts_set for frame in sample)
        if hits >= 0.8 * len(sample):
            return origin, False
    times = [sent for _, sent, _ in published]
    votes: Counter[int] = Counter()
    for frame in sample:
        timestamp, arrival = frame[0], frame[1]
        low = bisect.bisect_left(times, arrival - MAX_PLAUSIBLE_LATENCY_S)
        high = bisect.bisect_right(times, arrival + 0.005)
        for pts, _, _ in published[low:high]:
            votes[(timestamp - pts) % MOD] += 1
    if not votes:
        return None, True
    offset, count = max(((candidate, sum(votes.get((candidate + d) % MOD, 0) for d in NEAR)) for candidate in votes),
                        key=lambda item: (item[1], votes[item[0]]))
    if count < max(3, len(sample) // 2):
        return None, True
    return offset, offset != origin


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Delivery:
    expected: int = 0
    delivered: int = 0
    latencies_s: list[float] | None = None
    first_frame_s: list[float] | None = None
    rewritten: bool = False
    unmatched_viewers: int = 0

    def __post_init__(self) -> None:
        self.latencies_s = self.latencies_s or []
        self.first_frame_s = self.first_frame_s or []

    def summary(self) -> dict[str, Any]:
        latencies = [value * 1000 for value in self.latencies_s or []]
        first = [value * 1000 for value in self.first_frame_s or []]
        return {
            "frames_expected": self.expected,
            "frames_delivered": self.delivered,
            "delivery_ratio": round(self.delivered / self.expected, 4) if self.expected else None,
            "latency_ms": {"p50": _round(percentile(latencies, 0.5)), "p99": _round(percentile(latencies, 0.99)),
                           "max": _round(max(latencies) if latencies else None)},
            "first_keyframe_after_connect_ms_p50": _round(percentile(first, 0.5)),
            "timestamps": "rewritten" if self.rewritten else "preserved",
            "unmatched_viewers": self.unmatched_viewers,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def delivery(published: Sequence[PublishedFrame], origin: int | None, viewers: Iterable[dict[str, Any]],
             window: tuple[float, float], expected_viewers: int) -> Delivery:
    """Frames sent in the window, expected at every one of `expected_viewers` (missing viewers count as 0)."""
    start, end = window
    in_window = [(pts, sent) for pts, sent, _ in published if start <= sent < end]
    result = Delivery(expected=len(in_window) * expected_viewers)
    for viewer in viewers:
        frames = viewer["frames"]
        offset, rewritten = find_offset(published, frames, origin)
        if offset is None:
            result.unmatched_viewers += 1
            continue
        result.rewritten = result.rewritten or rewritten
        arrivals = {frame[0]: frame[1] for frame in frames if complete(frame)}
        for pts, sent in in_window:
            arrival = None
            for delta in NEAR if rewritten else (0,):
                arrival = arrivals.get((pts + offset + delta) % MOD)
                if arrival is not None:
                    break
            if arrival is not None:
                result.delivered += 1
                assert result.latencies_s is not None
                result.latencies_s.append(arrival - sent)
        connected = viewer.get("connected_at")
        first_key = next((frame[1] for frame in frames if frame[6] and complete(frame)), None)
        if connected is not None and first_key is not None:
            assert result.first_frame_s is not None
            result.first_frame_s.append(max(0.0, first_key - connected))
    return result
