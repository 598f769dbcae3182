"""The fan-out benchmark (bench/sfu_fanout.py) still runs end to end, at a small scale, so it cannot rot.

As root the bench creates its own network namespace (even when the suite already runs inside one); otherwise
it runs everything on loopback. Janus is left out here: the full comparison is `python bench/sfu_fanout.py`.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests import bench_runs


def run_bench(target: str, limit_s: float = 55) -> dict[str, Any]:
    summary, status, err = bench_runs.run_bench(
        "sfu_fanout.py", "--viewers", "2", "--seconds", "5", "--warmup", "2", "--ingest-seconds", "1",
        "--target", target, limit_s=limit_s)
    figures: dict[str, Any] = summary["targets"][target]
    assert status == 0 and figures["status"] == "ok", f"{figures}\n{err}"
    assert summary["network"] == ("netns" if os.geteuid() == 0 else "loopback")
    return figures


def check_figures(figures: dict[str, Any], min_delivery: float) -> None:
    assert figures["viewers"] == figures["viewers_connected"] == 2
    assert figures["server_cpu_seconds"] > 0 and figures["cpu_ms_per_viewer_second"] > 0
    assert figures["viewers_per_core"] > 0
    assert figures["frames_expected"] > 200  # 2 viewers x 5 s x 30 fps
    assert figures["delivery_ratio"] >= min_delivery, figures
    assert figures["unmatched_viewers"] == 0
    latency = figures["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p99"] < 1000, latency
    direct = figures["p2p"]
    assert direct["delivery_ratio"] >= 0.95 and direct["timestamps"] == "preserved", direct
    assert figures["added_latency_ms"]["p50"] is not None
    assert figures["rss_mb"] > 0


@pytest.mark.timeout(60)
def test_bench_smoke_naive_relay() -> None:
    figures = run_bench("naive")
    # Re-encoding per viewer: far costlier than forwarding, and timestamps are not the publisher's.
    check_figures(figures, min_delivery=0.5)  # it saturates easily when the machine is busy
    assert figures["timestamps"] == "rewritten"
    assert figures["cpu_ms_per_viewer_second"] > 50


@pytest.mark.timeout(60)
def test_bench_smoke_pinstream() -> None:
    figures = run_bench("pinstream")
    # Forwarding: every frame, timestamps untouched.
    check_figures(figures, min_delivery=0.99)
    assert figures["timestamps"] == "preserved"


def synthetic_run(offset: int, latency_s: float, lose_every: int = 0, rounding: int = 0) -> tuple[Any, Any]:
    from bench.media_clients import video_pts_deltas

    next_delta = video_pts_deltas()
    published, pts = [], 0
    for index in range(600):
        published.append((pts, 100.0 + index / 30, index % 60 == 0))
        pts += next_delta()
    frames = [((pts_ + offset + (rounding if index % 2 else 0)) % 2**32, sent + latency_s, 4, index * 4,
               index * 4 + 3, True, key)
              for index, (pts_, sent, key) in enumerate(published) if not lose_every or index % lose_every]
    return published, [{"frames": frames, "connected_at": 100.0}]


def test_bench_matches_frames_by_timestamp() -> None:
    from bench.analysis import delivery

    window = (105.0, 115.0)
    # Timestamps kept: found at the publisher's own origin.
    published, viewers = synthetic_run(offset=123456, latency_s=0.004)
    kept = delivery(published, 123456, viewers, window, 1).summary()
    assert kept["timestamps"] == "preserved" and kept["delivery_ratio"] == 1.0
    assert kept["latency_ms"]["p50"] == 4.0
    # Rewritten by a constant offset, rounded by a tick on every other frame (a re-encoder), one frame in ten
    # lost, and a second viewer that never connected: still matched, by the frame-duration fingerprint.
    published, viewers = synthetic_run(offset=2**32 - 777, latency_s=0.25, lose_every=10, rounding=1)
    rewritten = delivery(published, 123456, viewers, window, 2).summary()
    assert rewritten["timestamps"] == "rewritten" and rewritten["unmatched_viewers"] == 0
    assert rewritten["frames_expected"] == 600 and rewritten["frames_delivered"] == 270
    assert rewritten["latency_ms"]["p99"] == 250.0
