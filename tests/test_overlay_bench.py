"""The overlay fan-out benchmark (bench/overlay_fanout.py) still runs end to end at a small scale, on one
node and on two nodes over PostgreSQL and Redis, and reports what the full run reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "overlay_fanout.py"


def run_bench(*arguments: str, limit_s: float = 240) -> dict[str, Any]:
    process = subprocess.Popen([sys.executable, str(BENCH), "--clients", "40", "--processes", "2", "--rounds", "2",
                                *arguments], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"the bench did not finish in {limit_s:.0f}s:\n{out}\n{err[-3000:]}")
    lines = out.strip().splitlines()
    assert lines, err[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert process.returncode == 0, (report, err[-3000:])
    return report


def check(report: dict[str, Any], nodes: int) -> None:
    assert report["delivered_ratio"] == 1.0 and report["floor_delivered_ratio"] == 1.0
    assert 0 < report["p50_ms"] <= report["p99_ms"] and 0 < report["floor_p50_ms"] <= report["floor_p99_ms"]
    assert report["nodes"] == nodes and report["clients"] == 40 and report["p99_vs_floor"] > 0


def test_overlay_fanout_bench_one_node() -> None:
    check(run_bench("--nodes", "1"), 1)


@pytest.mark.postgres
def test_overlay_fanout_bench_two_nodes_over_redis() -> None:
    check(run_bench("--nodes", "2"), 2)
