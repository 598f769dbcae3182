"""Run a benchmark script the way a person would, at a small scale, and return the JSON object its last
output line holds: the bench smoke tests share this, so that no benchmark can rot unnoticed."""

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


def run_bench(script: str, *arguments: str, limit_s: float) -> tuple[dict[str, Any], int, str]:
    """(last-line JSON, exit status, stderr tail). A bench that outlives `limit_s` gets SIGTERM, on which
    every bench stops what it started (servers, databases, clients, namespaces), and fails the test."""
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / script), *arguments], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"{script} did not finish in {limit_s:.0f}s:\n{out}\n{err[-3000:]}")
    lines = out.strip().splitlines()
    assert lines, f"{script}: no output (exit {process.returncode}):\n{err[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report, process.returncode, err[-3000:]
