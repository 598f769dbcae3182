"""The HLS benchmark (bench/hls_latency.py) still runs end to end, at a small scale, so it cannot rot."""

from __future__ import annotations

import pytest

from tests import bench_runs

pytestmark = pytest.mark.timeout(240)


def test_hls_bench_smoke() -> None:
    summary, status, err = bench_runs.run_bench("hls_latency.py", "--seconds", "3", "--warmup", "3",
                                                "--segment-seconds", "1", limit_s=220)
    assert status == 0, err
    assert summary["bench"] == "hls_latency" and summary["latency_target_ms"] == 2000
    for room in ("remux", "transcode", "remux_stereo", "transcode_stereo", "remux_video_only", "transcode_video_only"):
        latency = summary["latency"][room]
        assert latency["frames"] > 30 and 0 < latency["p50_ms"] <= latency["p99_ms"], summary
        assert summary["cpu_cores"][room] >= 0
    assert summary["cpu_cores"]["transcode"] > summary["cpu_cores"]["remux_video_only"]
    for ratio in ("cpu_ratio", "cpu_ratio_stereo_audio", "cpu_ratio_video_only"):
        assert summary[ratio] is not None and isinstance(summary[f"{ratio}_ok"], bool), summary
