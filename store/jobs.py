"""Durable jobs: timed work that happens once, on some node, even across restarts and node deaths.

A job is scheduled inside the caller's write transaction, so it exists exactly when the change that needs it
does (a cart hold and its expiry commit together). Runners on any number of nodes poll for due jobs, take a
short lease on a batch, then run each job in one write transaction that first marks it done with a
conditional UPDATE and then calls the handler with that same session. The handler's database effects and the
job's completion therefore commit together or not at all, and two runners can never both complete one job:
the second one's conditional UPDATE matches no row. A node that dies mid-run leaves only an expiring lease.

On SQLite the handler runs inside the single writer connection's transaction, so every other write in the
process waits for it: handlers must be short database updates, never network calls or sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from config.schema import JobsSettings
from store.clock import now_ms
from store.database import Database
from store.models import Job
from store.statements import PerDialect, bound, bound_values, table_of

logger = logging.getLogger(__name__)

PENDING = "pending"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

# Exponential backoff stops growing here, so a large max_attempts cannot push due_at past any sane date.
MAX_BACKOFF_SECONDS = 86_400
# last_error keeps the start of the message: enough to diagnose, never a whole SQL statement or dump.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class JobContext:
    """What a handler learns about the job it runs; `attempt` counts from 1."""

    id: int
    kind: str
    key: str | None
    payload: dict[str, Any]
    due_at: int
    attempt: int


Handler = Callable[[AsyncSession, JobContext], Awaitable[None]]
"""Does a job's work with the session of the transaction that also marks the job done."""


class UnknownJobKind(LookupError):
    """A job whose kind has no handler on this runner; treated like a handler failure."""


_JOBS = table_of(Job)
_JOB_COLUMNS = ("kind", "key", "payload", "due_at", "status", "attempts", "lease_owner", "lease_expires_at",
                "last_error", "created_at", "finished_at")


def _keyed_upsert(insert_of: Any) -> Any:
    upsert = insert_of(_JOBS).values(bound_values(_JOBS, *_JOB_COLUMNS))
    replaced = {name: upsert.excluded[name] for name in _JOB_COLUMNS if name != "key"}
    return upsert.on_conflict_do_update(index_elements=[_JOBS.c.key], set_=replaced).returning(_JOBS.c.id)


_INSERT_JOB = insert(_JOBS).values(bound_values(_JOBS, *_JOB_COLUMNS)).returning(_JOBS.c.id)
_UPSERT_KEYED_JOB = PerDialect(_keyed_upsert)
_CANCEL_JOB = (update(_JOBS).where(_JOBS.c.key == bindparam("job_key"), _JOBS.c.status == PENDING)
               .values(status=CANCELLED, finished_at=bindparam("finished"), lease_owner=None, lease_expires_at=None)
               .returning(_JOBS.c.id))


async def schedule(session: AsyncSession, kind: str, due_at: int, payload: dict[str, Any] | None = None,
                   key: str | None = None) -> int:
    """Add a pending job in the caller's write transaction and return its id.

    A `key` names at most one job. Scheduling a key that already exists replaces that job in place: kind,
    due_at and payload take the new values, and it becomes pending again with no attempts, error or lease,
    whatever its status was (the same as if the old row had been deleted first, but keeping its id). A claim
    of the old version taken by a runner is void, so the old payload never runs after the replacement.
    """
    values = bound({"kind": kind, "key": key, "payload": payload or {}, "due_at": due_at, "status": PENDING,
                    "attempts": 0, "lease_owner": None, "lease_expires_at": None, "last_error": None,
                    "created_at": now_ms(), "finished_at": None})
    statement = _INSERT_JOB if key is None else _UPSERT_KEYED_JOB.of(session)
    return int((await session.execute(statement, values)).scalar_one())


async def cancel(session: AsyncSession, key: str) -> bool:
    """Cancel the pending job named `key` in the caller's transaction; False if there is none pending.

    A job that a runner has already completed stays done: cancelling and completing exclude each other.
    """
    return (await session.execute(_CANCEL_JOB, {"job_key": key, "finished": now_ms()})).first() is not None


def _default_owner() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def _describe(error: BaseException) -> str:
    """The error as kept in last_error: type and first line only, so SQL parameters and dumps stay out."""
    driver_error = error.orig if isinstance(error, sa_exc.StatementError) else None
    message = str(error if driver_error is None else driver_error)
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(error).__name__}: {first_line}"[:MAX_ERROR_CHARS]


def backoff_ms(settings: JobsSettings, attempts: int) -> int:
    """Delay before the retry that follows failed attempt number `attempts` (1, 2, ...): doubling, capped."""
    doubling = 1 << (attempts - 1)
    return min(settings.retry_backoff_seconds * doubling, MAX_BACKOFF_SECONDS) * 1000


class JobRunner:
    """Claims due jobs and runs them with their handlers, on a timer once started.

    `owner` must be unique among live runners (the default is host, pid and a random suffix): the lease is
    what tells runners apart. `settings` may be a callable, read again on every poll, so live reloads of
    poll interval, lease, batch and retry settings apply without a restart.
    """

    def __init__(self, db: Database, handlers: dict[str, Handler],
                 settings: JobsSettings | Callable[[], JobsSettings], owner: str | None = None) -> None:
        self.db = db
        self.handlers = dict(handlers)
        self.owner = owner or _default_owner()
        if isinstance(settings, JobsSettings):
            fixed = settings
            self._settings: Callable[[], JobsSettings] = lambda: fixed
        else:
            self._settings = settings
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Poll for due jobs in the background until `stop()`."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("job runner already started")
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"jobs:{self.owner}")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish the job in hand, hand back the leases of claimed jobs not yet run, and end the loop.

        Leases are released so that a restarting node's jobs run at once rather than after lease expiry.
        A loop still busy after `grace_seconds` is cancelled; its transaction rolls back.
        """
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        _, pending = await asyncio.wait({task}, timeout=grace_seconds)
        if pending:
            logger.warning("job runner did not stop in time; cancelling it", extra={"worker": self.owner})
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        """Claim one batch of due jobs and run it; returns how many jobs ran (succeeded or failed)."""
        _, ran = await self._run_batch()
        return ran

    async def claim(self) -> list[int]:
        """Lease up to a batch of due jobs to this runner, oldest due first; returns their ids.

        On PostgreSQL `SKIP LOCKED` lets concurrent claimers pass over each other's rows instead of waiting;
        on SQLite the writer's BEGIN IMMEDIATE already serialises claimers and the clause is not emitted.
        """
        settings = self._settings()
        async with self.db.write() as session:
            now = now_ms()
            due = (select(Job.id)
                   .where(Job.status == PENDING, Job.due_at <= now,
                          or_(Job.lease_expires_at.is_(None), Job.lease_expires_at <= now))
                   .order_by(Job.due_at, Job.id).limit(settings.batch).with_for_update(skip_locked=True))
            ids = list((await session.scalars(due)).all())
            if ids:
                await session.execute(
                    update(Job).where(Job.id.in_(ids))
                    .values(lease_owner=self.owner, lease_expires_at=now + settings.lease_seconds * 1000)
                    .execution_options(synchronize_session=False))
        return ids

    async def run_job(self, job_id: int) -> bool:
        """Run one job this runner has claimed; False if its lease was lost or it could not be started.

        Completion comes first in the transaction, conditional on the job still being pending and leased to
        us. If another runner took it over (or it was cancelled or rescheduled) nothing matches and the
        handler is not called. If the handler or the commit fails, everything rolls back together.
        """
        job: JobContext | None = None
        try:
            async with self.db.write() as session:
                job = await self._take(session, job_id)
                if job is None:
                    logger.info("job lease lost; skipping", extra={"job_id": job_id, "worker": self.owner})
                    return False
                handler = self.handlers.get(job.kind)
                if handler is None:
                    raise UnknownJobKind(f"no handler for job kind {job.kind!r}")
                await handler(session, job)
        except Exception as error:
            if job is None:
                logger.warning("could not start job", exc_info=True,
                               extra={"job_id": job_id, "worker": self.owner})
                return False
            await self._record_failure(job, error)
            return True
        logger.info("job done", extra={"job_id": job.id, "job_kind": job.kind, "attempt": job.attempt})
        return True

    async def _take(self, session: AsyncSession, job_id: int) -> JobContext | None:
        now = now_ms()
        statement = (update(Job)
                     .where(Job.id == job_id, Job.status == PENDING, Job.lease_owner == self.owner)
                     .values(status=DONE, finished_at=now, attempts=Job.attempts + 1)
                     .returning(Job.kind, Job.key, Job.payload, Job.due_at, Job.attempts)
                     .execution_options(synchronize_session=False))
        row = (await session.execute(statement)).first()
        if row is None:
            return None
        return JobContext(id=job_id, kind=row.kind, key=row.key, payload=dict(row.payload or {}),
                          due_at=row.due_at, attempt=row.attempts)

    async def _record_failure(self, job: JobContext, error: Exception) -> None:
        """Count the failed attempt, then retry later with backoff or give up after max_attempts."""
        settings = self._settings()
        fields = {"job_id": job.id, "job_kind": job.kind, "attempt": job.attempt, "worker": self.owner}
        # A database error's text carries the statement's parameters, which may be payload secrets: log
        # only its first line then. Any other error keeps its traceback.
        statement_error = isinstance(error, sa_exc.StatementError)
        logger.warning("job attempt failed", exc_info=None if statement_error else error,
                       extra={**fields, "error": _describe(error)})
        try:
            async with self.db.write() as session:
                now = now_ms()
                attempts = (await session.scalars(
                    select(Job.attempts)
                    .where(Job.id == job.id, Job.status == PENDING, Job.lease_owner == self.owner)
                    .with_for_update())).first()
                if attempts is None:
                    logger.info("job lease lost before its failure was recorded", extra=fields)
                    return
                attempts += 1
                values: dict[str, Any] = {"attempts": attempts, "last_error": _describe(error),
                                          "lease_owner": None, "lease_expires_at": None}
                if attempts >= settings.max_attempts:
                    values.update(status=FAILED, finished_at=now)
                else:
                    values["due_at"] = now + backoff_ms(settings, attempts)
                await session.execute(update(Job).where(Job.id == job.id).values(values)
                                      .execution_options(synchronize_session=False))
        except Exception:
            logger.exception("could not record job failure; it runs again once its lease expires",
                             extra=fields)
            return
        if attempts >= settings.max_attempts:
            logger.error("job failed for good", extra={**fields, "max_attempts": settings.max_attempts})
        else:
            logger.info("job will be retried", extra={**fields, "retry_in_ms": values["due_at"] - now})

    async def _release(self, ids: list[int]) -> None:
        """Hand back leases on claimed jobs we will not run, so another runner need not wait them out."""
        try:
            async with self.db.write() as session:
                await session.execute(
                    update(Job).where(Job.id.in_(ids), Job.status == PENDING, Job.lease_owner == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False))
        except Exception:
            logger.exception("could not release job leases; they expire on their own",
                             extra={"worker": self.owner, "jobs": len(ids)})

    async def _run_batch(self) -> tuple[int, int]:
        ids = await self.claim()
        ran = 0
        for index, job_id in enumerate(ids):
            if self._stopping.is_set():
                await self._release(ids[index:])
                break
            if await self.run_job(job_id):
                ran += 1
        return len(ids), ran

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            settings = self._settings()
            claimed = 0
            try:
                claimed, _ = await self._run_batch()
            except Exception:
                logger.exception("job poll failed", extra={"worker": self.owner})
            if claimed >= settings.batch:
                continue  # a full batch: more may be due already, so poll again without waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), settings.poll_interval_ms / 1000)
