"""The overlay fan-out benchmark (bench/overlay_fanout.py) still runs end to end at a small scale, on one
node and on two nodes over PostgreSQL and Redis, and reports what the full run reports."""

from __future__ import annotations

from typing import Any

import pytest

from tests import bench_runs


def run_bench(*arguments: str, limit_s: float = 240) -> dict[str, Any]:
    report, status, err = bench_runs.run_bench(
        "overlay_fanout.py", "--clients", "40", "--processes", "2", "--rounds", "2", *arguments, limit_s=limit_s)
    assert status == 0, (report, err)
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
