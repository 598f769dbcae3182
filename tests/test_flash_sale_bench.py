"""The flash-sale benchmark (bench/flash_sale.py) still runs end to end at a small scale, so it cannot rot:
a real server, real HTTP, and the same verdict the full run gives (nothing oversold, nothing left unsold
while buyers wanted it)."""

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
BENCH = ROOT / "bench" / "flash_sale.py"


def run_bench(*arguments: str, limit_s: float = 150) -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, str(BENCH), "--buyers", "50", "--units", "5", "--clients", "1", "--trivial-seconds", "0.5",
         "--timeout", "60", *arguments], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the bench stops its server (and database) on SIGTERM
        out, err = process.communicate(timeout=30)
        pytest.fail(f"the bench did not finish in {limit_s:.0f}s:\n{out}\n{err[-3000:]}")
    lines = out.strip().splitlines()
    assert lines, err[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert process.returncode == 0, (report, err[-3000:])
    return report


def check(report: dict[str, Any]) -> None:
    assert report["oversold"] == 0 and report["unsold_with_demand"] == 0
    assert report["final_stock"] == {"available": 0, "held": 0, "sold": 5}
    assert report["bought"] == 5 and report["paid_units"] == 5
    assert report["reserve_rps"] > 0 and report["trivial_rps"] > 0 and report["p99_ms"] > 0
    # rate_limited: a buyer retrying within ms of a refusal can pass rate_limits.reserves_per_second
    assert report["errors"] == 0 and set(report["answers"]) <= {"held", "sold_out", "rate_limited"}


def test_flash_sale_bench_on_sqlite() -> None:
    check(run_bench("--backend", "sqlite"))


@pytest.mark.postgres
def test_flash_sale_bench_on_postgres() -> None:
    check(run_bench("--backend", "postgres", "--no-keys"))
