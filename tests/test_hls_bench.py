"""The HLS benchmark (bench/hls_latency.py) still runs end to end, at a small scale, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def test_hls_bench_smoke() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "hls_latency.py"), "--seconds", "3",
                             "--warmup", "3", "--segment-seconds", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "hls_latency" and summary["latency_target_ms"] == 2000
    for room in ("remux", "transcode", "remux_video_only", "transcode_video_only"):
        latency = summary["latency"][room]
        assert latency["frames"] > 30 and 0 < latency["p50_ms"] <= latency["p99_ms"], summary
        assert summary["cpu_cores"][room] >= 0
    assert summary["cpu_cores"]["transcode"] > summary["cpu_cores"]["remux_video_only"]
    assert summary["remux_to_transcode_cpu"] is not None
