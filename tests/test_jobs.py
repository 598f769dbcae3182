"""Durable jobs on SQLite and PostgreSQL: due jobs run once, retries back off, leases expire and are taken
over, and runners on separate engines or in separate processes never run one job twice.

The module doubles as the worker program those process tests start (`python -m tests.test_jobs ...`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from config.logs import JsonFormatter
from config.schema import DatabaseSettings, JobsSettings
from store import Database, JobContext, JobRunner, migrate, now_ms
from store import jobs as jobs_module
from store.jobs import Handler, backoff_ms, cancel, schedule
from store.models import Job

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)

# A table of the tests' own, outside Base.metadata: one row per committed handler run.
effects_metadata = MetaData()
effects = Table(
    "job_effects", effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("worker", String(100), nullable=False),
)


def jobs_settings(**changes: Any) -> JobsSettings:
    return JobsSettings(**{"poll_interval_ms": 10, **changes})


@dataclass
class FakeClock:
    now: int

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The jobs module's clock, moved by hand so due times and leases are exact without sleeping."""
    fake = FakeClock(now_ms())
    monkeypatch.setattr(jobs_module, "now_ms", fake)
    return fake


async def create_effects(db: Database) -> None:
    async with db.writer.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)


async def effect_counts(db: Database) -> Counter[int]:
    async with db.read() as session:
        return Counter((await session.scalars(select(effects.c.job_id))).all())


async def all_jobs(db: Database) -> list[Job]:
    async with db.read() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def job(db: Database, job_id: int) -> Job:
    async with db.read() as session:
        return (await session.scalars(select(Job).where(Job.id == job_id))).one()


async def schedule_now(db: Database, kind: str, due_at: int, count: int = 1,
                       payload: dict[str, Any] | None = None, key: str | None = None) -> list[int]:
    async with db.write() as session:
        return [await schedule(session, kind, due_at, payload, key) for _ in range(count)]


def recording(calls: list[tuple[int, str]], worker: str, sleep: float = 0.0) -> Handler:
    """A handler that notes each call and writes one effect row in the job's own transaction."""

    async def handle(session: AsyncSession, context: JobContext) -> None:
        calls.append((context.id, worker))
        await session.execute(insert(effects).values(job_id=context.id, worker=worker))
        if sleep:
            await asyncio.sleep(sleep)

    return handle


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.02)


async def no_pending(db: Database) -> bool:
    async with db.read() as session:
        return (await session.scalar(select(func.count()).where(Job.status == "pending"))) == 0


# --- scheduling and running ---------------------------------------------------------------------------


async def test_due_job_runs_once_and_future_job_waits(db: Database, clock: FakeClock) -> None:
    await create_effects(db)
    seen: list[JobContext] = []

    async def handle(session: AsyncSession, context: JobContext) -> None:
        seen.append(context)
        await session.execute(insert(effects).values(job_id=context.id, worker="a"))

    runner = JobRunner(db, {"effect": handle}, jobs_settings(), owner="a")
    [due] = await schedule_now(db, "effect", clock.now - 5, payload={"hold": 7}, key="hold-expiry:7")
    [later] = await schedule_now(db, "effect", clock.now + 60_000)

    assert await runner.run_once() == 1
    assert await runner.run_once() == 0
    assert seen == [JobContext(id=due, kind="effect", key="hold-expiry:7", payload={"hold": 7},
                               due_at=clock.now - 5, attempt=1)]
    assert await effect_counts(db) == {due: 1}
    done, waiting = await all_jobs(db)
    assert (done.status, done.attempts, done.finished_at, done.lease_owner) == ("done", 1, clock.now, "a")
    assert (waiting.id, waiting.status, waiting.attempts, waiting.lease_owner) == (later, "pending", 0, None)

    clock.now += 60_000
    assert await runner.run_once() == 1
    assert await runner.run_once() == 0
    assert await effect_counts(db) == {due: 1, later: 1}


async def test_schedule_commits_or_rolls_back_with_the_callers_transaction(db: Database,
                                                                           clock: FakeClock) -> None:
    with pytest.raises(RuntimeError, match="caller failed"):
        async with db.write() as session:
            await schedule(session, "effect", clock.now)
            raise RuntimeError("caller failed")
    assert await all_jobs(db) == []
    ids = await schedule_now(db, "effect", clock.now, count=2)
    assert len(set(ids)) == 2, "jobs without a key never replace each other"


async def test_key_upsert_replaces_the_job_and_cancel_stops_it(db: Database, clock: FakeClock) -> None:
    seen: list[JobContext] = []

    async def handle(session: AsyncSession, context: JobContext) -> None:
        seen.append(context)

    runner = JobRunner(db, {"effect": handle, "other": handle}, jobs_settings())
    [first] = await schedule_now(db, "effect", clock.now + 60_000, payload={"v": 1}, key="hold-expiry:1")
    [second] = await schedule_now(db, "other", clock.now, payload={"v": 2}, key="hold-expiry:1")
    assert first == second
    [row] = await all_jobs(db)
    assert (row.kind, row.due_at, row.payload, row.status) == ("other", clock.now, {"v": 2}, "pending")

    assert await runner.run_once() == 1
    assert [(c.id, c.kind, c.payload) for c in seen] == [(first, "other", {"v": 2})]

    # Scheduling a key whose job has finished starts it afresh, in the same row.
    [third] = await schedule_now(db, "effect", clock.now + 1000, payload={"v": 3}, key="hold-expiry:1")
    assert third == first
    row = await job(db, first)
    assert (row.status, row.attempts, row.finished_at, row.last_error, row.lease_owner) == (
        "pending", 0, None, None, None)

    async with db.write() as session:
        assert await cancel(session, "hold-expiry:1") is True
    async with db.write() as session:
        assert await cancel(session, "hold-expiry:1") is False
        assert await cancel(session, "no-such-key") is False
    row = await job(db, first)
    assert (row.status, row.finished_at) == ("cancelled", clock.now)
    clock.now += 10_000
    assert await runner.run_once() == 0
    assert len(seen) == 1


async def test_rescheduling_or_cancelling_voids_a_claim_in_flight(db: Database, clock: FakeClock) -> None:
    calls: list[tuple[int, str]] = []
    await create_effects(db)
    a = JobRunner(db, {"effect": recording(calls, "a")}, jobs_settings(), owner="a")
    [moved] = await schedule_now(db, "effect", clock.now, payload={"v": 1}, key="k1")
    [dropped] = await schedule_now(db, "effect", clock.now, key="k2")
    assert await a.claim() == [moved, dropped]

    await schedule_now(db, "effect", clock.now + 5000, payload={"v": 2}, key="k1")
    async with db.write() as session:
        assert await cancel(session, "k2")
    assert await a.run_job(moved) is False
    assert await a.run_job(dropped) is False
    assert calls == []
    assert [(j.status, j.lease_owner) for j in await all_jobs(db)] == [("pending", None), ("cancelled", None)]

    assert await a.run_once() == 0
    clock.now += 5000
    assert await a.run_once() == 1
    assert calls == [(moved, "a")]


# --- failures -----------------------------------------------------------------------------------------


async def test_failing_handler_is_retried_with_backoff_then_failed(db: Database, clock: FakeClock) -> None:
    await create_effects(db)
    attempts: list[int] = []

    async def flaky(session: AsyncSession, context: JobContext) -> None:
        attempts.append(context.attempt)
        await session.execute(insert(effects).values(job_id=context.id, worker="x"))
        raise RuntimeError(f"boom {context.attempt}")

    runner = JobRunner(db, {"flaky": flaky}, jobs_settings(max_attempts=3, retry_backoff_seconds=2))
    start = clock.now
    [job_id] = await schedule_now(db, "flaky", start)

    assert await runner.run_once() == 1
    row = await job(db, job_id)
    assert (row.status, row.attempts, row.due_at, row.last_error) == ("pending", 1, start + 2000,
                                                                     "RuntimeError: boom 1")
    assert (row.lease_owner, row.lease_expires_at, row.finished_at) == (None, None, None)

    clock.now = start + 1999
    assert await runner.run_once() == 0
    clock.now = start + 2000
    assert await runner.run_once() == 1
    row = await job(db, job_id)
    assert (row.status, row.attempts, row.due_at) == ("pending", 2, start + 2000 + 4000)

    clock.now = start + 6000
    assert await runner.run_once() == 1
    row = await job(db, job_id)
    assert (row.status, row.attempts, row.finished_at, row.last_error) == ("failed", 3, start + 6000,
                                                                          "RuntimeError: boom 3")
    assert row.lease_owner is None
    clock.now += 10**9
    assert await runner.run_once() == 0
    assert attempts == [1, 2, 3]
    assert await effect_counts(db) == {}, "a failed attempt's database effects roll back with it"


async def test_retry_that_succeeds_completes_the_job(db: Database, clock: FakeClock) -> None:
    await create_effects(db)

    async def once_flaky(session: AsyncSession, context: JobContext) -> None:
        await session.execute(insert(effects).values(job_id=context.id, worker="x"))
        if context.attempt == 1:
            raise ConnectionError("provider unavailable")

    runner = JobRunner(db, {"charge": once_flaky}, jobs_settings(retry_backoff_seconds=0))
    [job_id] = await schedule_now(db, "charge", clock.now)
    assert await runner.run_once() == 1
    assert await runner.run_once() == 1
    row = await job(db, job_id)
    assert (row.status, row.attempts, row.last_error) == ("done", 2, "ConnectionError: provider unavailable")
    assert await effect_counts(db) == {job_id: 1}


def test_backoff_doubles_and_is_capped() -> None:
    settings = JobsSettings(retry_backoff_seconds=5, max_attempts=100)
    assert [backoff_ms(settings, n) for n in (1, 2, 3, 4)] == [5000, 10_000, 20_000, 40_000]
    assert backoff_ms(settings, 99) == jobs_module.MAX_BACKOFF_SECONDS * 1000


async def test_unknown_kind_is_failed_without_stopping_the_batch(db: Database, clock: FakeClock) -> None:
    calls: list[tuple[int, str]] = []
    await create_effects(db)
    runner = JobRunner(db, {"effect": recording(calls, "a")}, jobs_settings(max_attempts=2))
    [mystery] = await schedule_now(db, "mystery", clock.now - 1)
    [known] = await schedule_now(db, "effect", clock.now)

    assert await runner.run_once() == 2
    assert calls == [(known, "a")]
    row = await job(db, mystery)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "UnknownJobKind: no handler for job kind 'mystery'"
    clock.now = row.due_at
    assert await runner.run_once() == 1
    assert (await job(db, mystery)).status == "failed"


async def test_failures_are_logged_with_ids_and_without_payload_or_parameters(
        db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    await create_effects(db)
    secret = "tok_secret_4242"

    async def raises(session: AsyncSession, context: JobContext) -> None:
        raise RuntimeError("card declined")

    async def bad_sql(session: AsyncSession, context: JobContext) -> None:
        # The same primary key twice: the database error's text would carry the secret as a parameter.
        await session.execute(insert(effects).values(id=1, job_id=context.id, worker=secret))
        await session.execute(insert(effects).values(id=1, job_id=context.id, worker=secret))

    runner = JobRunner(db, {"raises": raises, "bad_sql": bad_sql}, jobs_settings(max_attempts=1))
    [plain] = await schedule_now(db, "raises", clock.now, payload={"card_token": secret})
    [sql] = await schedule_now(db, "bad_sql", clock.now, payload={"card_token": secret})
    with caplog.at_level(logging.INFO, logger="store.jobs"):
        assert await runner.run_once() == 2

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines and all(secret not in line for line in lines)
    failed = {(getattr(r, "job_id", None), getattr(r, "job_kind", None))
              for r in caplog.records if r.getMessage() == "job attempt failed"}
    assert failed == {(plain, "raises"), (sql, "bad_sql")}
    sql_row = await job(db, sql)
    assert sql_row.status == "failed"
    assert sql_row.last_error is not None and sql_row.last_error.startswith("IntegrityError: ")
    assert secret not in sql_row.last_error and "\n" not in sql_row.last_error


# --- leases, shutdown and restart ---------------------------------------------------------------------


async def test_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(db: Database,
                                                                           clock: FakeClock) -> None:
    calls: list[tuple[int, str]] = []
    await create_effects(db)
    a = JobRunner(db, {"effect": recording(calls, "a")}, jobs_settings(lease_seconds=1), owner="a")
    b = JobRunner(db, {"effect": recording(calls, "b")}, jobs_settings(lease_seconds=1), owner="b")
    [job_id] = await schedule_now(db, "effect", clock.now)

    assert await a.claim() == [job_id]  # ... and node a stalls here, before running it.
    assert (await job(db, job_id)).lease_expires_at == clock.now + 1000
    clock.now += 999
    assert await b.run_once() == 0
    clock.now += 1
    assert await b.claim() == [job_id]
    assert await a.run_job(job_id) is False  # a wakes up: the lease is b's now.
    assert await b.run_job(job_id) is True
    assert await a.run_job(job_id) is False
    assert await b.run_job(job_id) is False, "a done job never runs again, not even for its owner"
    assert calls == [(job_id, "b")]
    assert await effect_counts(db) == {job_id: 1}
    row = await job(db, job_id)
    assert (row.status, row.attempts, row.lease_owner) == ("done", 1, "b")


async def test_loop_runs_jobs_and_stop_hands_back_unrun_claims(db: Database, clock: FakeClock) -> None:
    calls: list[tuple[int, str]] = []
    await create_effects(db)
    settings = jobs_settings(batch=5, lease_seconds=600)
    runner: JobRunner
    stopping: list[asyncio.Task[None]] = []

    async def stop_during_first(session: AsyncSession, context: JobContext) -> None:
        calls.append((context.id, "a"))
        stopping.append(asyncio.create_task(runner.stop()))
        await asyncio.sleep(0)  # let stop() raise its flag before this job commits

    runner = JobRunner(db, {"effect": stop_during_first}, lambda: settings, owner="a")
    ids = await schedule_now(db, "effect", clock.now, count=5)
    runner.start()
    async def stop_requested() -> bool:
        return bool(stopping)

    await wait_until(stop_requested, seconds=10)
    await asyncio.wait_for(stopping[0], timeout=10)
    assert calls == [(ids[0], "a")]
    rows = await all_jobs(db)
    assert [(r.status, r.lease_owner) for r in rows] == [("done", "a")] + [("pending", None)] * 4

    # The leases came back, so the next runner need not wait 600 s for them.
    b = JobRunner(db, {"effect": recording(calls, "b")}, settings, owner="b")
    b.start()
    try:
        await wait_until(lambda: no_pending(db), seconds=10)
    finally:
        await b.stop()
    assert calls[1:] == [(i, "b") for i in ids[1:]]


async def test_due_jobs_run_after_restart(database_url: str, tmp_path: Path) -> None:
    first = Database(DatabaseSettings(url=database_url))
    await migrate(first)
    await create_effects(first)
    await first.close()

    # A separate process schedules the jobs and exits: all that survives it is the database.
    output = await run_worker(tmp_path, "schedule", database_url)
    due, future = json.loads(output)

    second = Database(DatabaseSettings(url=database_url))
    try:
        calls: list[tuple[int, str]] = []
        runner = JobRunner(second, {"effect": recording(calls, "new")}, jobs_settings())
        assert await runner.run_once() == len(due)
        assert await runner.run_once() == 0
        assert sorted(job_id for job_id, _ in calls) == sorted(due)
        assert (await job(second, future)).status == "pending"
    finally:
        await second.close()


async def test_job_of_a_node_killed_mid_run_runs_once_its_lease_expires(
        database_url: str, tmp_path: Path, clock: FakeClock) -> None:
    db = Database(DatabaseSettings(url=database_url))
    try:
        await migrate(db)
        await create_effects(db)
        ids = await schedule_now(db, "effect", now_ms(), count=3)

        # The worker claims all three, then dies inside the first job's transaction.
        output = await run_worker(tmp_path, "die", database_url, expect_exit=3)
        assert json.loads(output) == ids
        rows = await all_jobs(db)
        assert {(r.status, r.attempts, r.lease_owner) for r in rows} == {("pending", 0, "doomed")}
        assert await effect_counts(db) == {}, "the dead node's uncommitted effect is gone"

        calls: list[tuple[int, str]] = []
        runner = JobRunner(db, {"effect": recording(calls, "survivor")}, jobs_settings())
        lease_expires_at = rows[0].lease_expires_at
        assert lease_expires_at is not None
        clock.now = lease_expires_at - 1
        assert await runner.run_once() == 0
        clock.now = lease_expires_at
        assert await runner.run_once() == 3
        assert await effect_counts(db) == dict.fromkeys(ids, 1)
    finally:
        await db.close()


# --- many runners at once -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "lease_seconds", "handler_sleep"),
                         [(10, 30, 0.0), (200, 1, 0.01)], ids=["small-batches", "leases-expire-mid-batch"])
async def test_two_runners_on_separate_engines_never_run_a_job_twice(
        database_url: str, batch: int, lease_seconds: int, handler_sleep: float) -> None:
    """Two Database objects are two nodes. With 1 s leases and 200 jobs claimed in one batch, the first
    node's later leases expire while it works, so the second takes them over and both go for the same ids."""
    nodes = [Database(DatabaseSettings(url=database_url)) for _ in range(2)]
    try:
        await migrate(nodes[0])
        await create_effects(nodes[0])
        ids = await schedule_now(nodes[0], "effect", now_ms(), count=200)
        calls: list[tuple[int, str]] = []
        settings = jobs_settings(batch=batch, lease_seconds=lease_seconds)
        runners = [JobRunner(node, {"effect": recording(calls, name, handler_sleep)}, settings, owner=name)
                   for node, name in zip(nodes, ["a", "b"], strict=True)]
        for runner in runners:
            runner.start()
        try:
            await wait_until(lambda: no_pending(nodes[0]), seconds=60)
        finally:
            await asyncio.gather(*(runner.stop() for runner in runners))

        assert await effect_counts(nodes[0]) == dict.fromkeys(ids, 1)
        assert Counter(job_id for job_id, _ in calls) == dict.fromkeys(ids, 1)
        rows = await all_jobs(nodes[0])
        assert {(r.status, r.attempts) for r in rows} == {("done", 1)}
        if not nodes[0].is_sqlite:
            assert {worker for _, worker in calls} == {"a", "b"}, "both nodes should have taken part"
    finally:
        for node in nodes:
            await node.close()


async def test_two_runner_processes_never_run_a_job_twice(database_url: str, tmp_path: Path) -> None:
    db = Database(DatabaseSettings(url=database_url))
    try:
        await migrate(db)
        await create_effects(db)
        ids = await schedule_now(db, "effect", now_ms(), count=200)

        workers = [await start_worker(tmp_path, "run", database_url, name) for name in ("p1", "p2")]
        try:
            for process, _ in workers:
                assert process.stdout is not None
                assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
            for process, _ in workers:  # both start together, once both are connected
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            outputs = [await finish_worker(process, log) for process, log in workers]
        finally:
            for process, _ in workers:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

        ran = {name: json.loads(output) for name, output in zip(["p1", "p2"], outputs, strict=True)}
        assert sorted(ran["p1"] + ran["p2"]) == ids, "every job ran, and none in both processes"
        assert await effect_counts(db) == dict.fromkeys(ids, 1)
        assert {(r.status, r.attempts) for r in await all_jobs(db)} == {("done", 1)}
        if not db.is_sqlite:
            assert ran["p1"] and ran["p2"], "both processes should have taken part"
    finally:
        await db.close()


# --- the worker process -------------------------------------------------------------------------------


async def start_worker(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, Path]:
    log = tmp_path / f"worker-{'-'.join(args[:1] + args[2:])}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.test_jobs", *args, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=stderr)
    return process, log


async def finish_worker(process: asyncio.subprocess.Process, log: Path, expect_exit: int = 0) -> str:
    """The worker's last line of output, once it has exited with `expect_exit`."""
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    if process.returncode != expect_exit:
        pytest.fail(f"worker exited with {process.returncode}:\n{await asyncio.to_thread(log.read_text)}")
    return stdout.decode().strip().splitlines()[-1]


async def run_worker(tmp_path: Path, *args: str, expect_exit: int = 0) -> str:
    process, log = await start_worker(tmp_path, *args)
    try:
        return await finish_worker(process, log, expect_exit)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _worker(mode: str, url: str, name: str = "worker") -> None:
    db = Database(DatabaseSettings(url=url))
    try:
        if mode == "schedule":
            now = now_ms()
            due = await schedule_now(db, "effect", now - 1000, count=2)
            due += await schedule_now(db, "effect", now, key="hold-expiry:1")
            [future] = await schedule_now(db, "effect", now + 3_600_000)
            print(json.dumps([due, future]), flush=True)
        elif mode == "die":
            async def die(session: AsyncSession, context: JobContext) -> None:
                await session.execute(insert(effects).values(job_id=context.id, worker="doomed"))
                os._exit(3)

            runner = JobRunner(db, {"effect": die}, jobs_settings(lease_seconds=30), owner="doomed")
            claimed = await runner.claim()
            print(json.dumps(claimed), flush=True)
            await runner.run_job(claimed[0])
        elif mode == "run":
            await db.ping()
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            calls: list[tuple[int, str]] = []
            # Whoever claims first takes all 200 jobs of 10 ms under a 1 s lease, so the other takes over
            # its tail once the leases expire and both then go through the same ids.
            runner = JobRunner(db, {"effect": recording(calls, name, 0.01)},
                               jobs_settings(batch=200, lease_seconds=1), owner=name)
            runner.start()
            try:
                await wait_until(lambda: no_pending(db), seconds=45)
            finally:
                await runner.stop()
            print(json.dumps([job_id for job_id, _ in calls]), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await db.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_worker(*sys.argv[1:]))
