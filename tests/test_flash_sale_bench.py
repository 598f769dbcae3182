"""The flash-sale benchmark (bench/flash_sale.py) still runs end to end at a small scale, so it cannot rot:
a real server, real HTTP, and the same verdict the full run gives (nothing oversold, nothing left unsold
while buyers wanted it)."""

from __future__ import annotations

from typing import Any

import pytest

from tests import bench_runs


def run_bench(*arguments: str, limit_s: float = 150) -> dict[str, Any]:
    report, status, err = bench_runs.run_bench(
        "flash_sale.py", "--buyers", "50", "--units", "5", "--clients", "1", "--trivial-seconds", "0.5",
        "--timeout", "60", *arguments, limit_s=limit_s)
    assert status == 0, (report, err)
    return report


def check(report: dict[str, Any]) -> None:
    assert report["oversold"] == 0 and report["unsold_with_demand"] == 0
    assert report["final_stock"] == {"available": 0, "held": 0, "sold": 5}
    assert report["bought"] == 5 and report["paid_units"] == 5
    assert report["reserve_rps"] > 0 and report["trivial_rps"] > 0 and report["p99_ms"] > 0
    assert report["purchase_p50_ms"] > 0 and report["server_cpu"]["us_per_reserve"] > 0
    # rate_limited: a buyer retrying within ms of a refusal can pass rate_limits.reserves_per_second
    assert report["errors"] == 0 and set(report["answers"]) <= {"held", "sold_out", "rate_limited"}


def test_flash_sale_bench_on_sqlite() -> None:
    check(run_bench("--backend", "sqlite"))


@pytest.mark.postgres
def test_flash_sale_bench_on_postgres() -> None:
    check(run_bench("--backend", "postgres", "--no-keys"))


def test_the_control_run_has_nothing_for_sale() -> None:
    """`--units 0`: every reserve is refused for the whole timeout (the refusal path alone)."""
    report, status, err = bench_runs.run_bench(
        "flash_sale.py", "--buyers", "50", "--units", "0", "--clients", "1", "--trivial-seconds", "0.5",
        "--timeout", "1.5", "--backend", "sqlite", limit_s=120)
    assert status == 0, (report, err)
    assert report["final_stock"] == {"available": 0, "held": 0, "sold": 0} and report["bought"] == 0
    assert report["reserve_attempts"] > 0 and set(report["answers"]) <= {"sold_out", "rate_limited"}


def test_purchase_steps_bench_prices_each_step_against_a_healthz() -> None:
    """bench/purchase_steps.py: every step measured, a purchase dearer than a healthz."""
    report, status, err = bench_runs.run_bench("purchase_steps.py", "--buyers", "10", "--backend", "sqlite",
                                               limit_s=120)
    assert status == 0, (report, err)
    assert report["counts"] == {"hold": 10, "checkout": 8, "payment": 8, "cancel": 2, "healthz": 10}
    assert report["healthz_ms"] > 0 and report["purchase_ms"] > report["healthz_ms"]
    assert set(report) >= {"hold_in_healthz", "checkout_in_healthz", "payment_in_healthz", "cancel_in_healthz"}
