"""One media worker process, kept running: started with a control socket, restarted with backoff when it dies,
stopped gracefully. Callers hold the supervisor, never the process, so a restart is invisible to them except
for what it cost: calls it cut short fail with 503 "media_restarted", each session it took down is announced
as `session.closed` (reason "worker_died"), and `worker.restarted` says when a new worker takes calls again."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from subprocess import DEVNULL
from typing import Any, TypeVar

from config.schema import LoggingSettings, MediaSettings
from media.api import MediaError, MediaEvent, SessionKind
from media.calls import RemoteMedia
from media.client import CALL_TIMEOUT, EventCallback, MediaClient, Subscribers
from media.protocol import MAX_LINE

logger = logging.getLogger(__name__)

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
"""Put on the worker's PYTHONPATH: the server may run from any directory without the package installed."""

BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds before restart number n of a worker that keeps dying young."""
STABLE_AFTER = 30.0
"""A worker that lived this long died of something new: restart it at once again."""


class Backoff:
    """Restart delays for a child process: growing while it keeps dying young, reset once one lived long."""

    def __init__(self) -> None:
        self._young_deaths = 0
        self._began = 0.0

    def started(self) -> None:
        self._began = time.monotonic()

    def delay(self) -> float:
        """Seconds to wait before the next start, the last one having just ended."""
        self._young_deaths = 0 if time.monotonic() - self._began >= STABLE_AFTER else self._young_deaths + 1
        return BACKOFF[min(self._young_deaths, len(BACKOFF) - 1)]


def child_environment() -> dict[str, str]:
    """The environment of a Python child process of the server (media worker, HLS packager)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class MediaSupervisor(RemoteMedia):
    """MediaControl backed by one worker process that this object starts, watches and restarts.

    A call made while the worker (re)starts waits for it, within the same per-call timeout."""

    def __init__(self, settings: MediaSettings, logging_settings: LoggingSettings | None = None, *,
                 index: int = 0, service: str | None = None, timeout: float = CALL_TIMEOUT,
                 start_timeout: float = 30.0, stop_grace: float = 5.0) -> None:
        """`service` ("module:Class") replaces the worker's MediaService; tests use it, production does not."""
        self.settings = settings
        self.logging_settings = logging_settings or LoggingSettings()
        self.index = index
        self.service = service
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.restarts = 0
        self._subscribers = Subscribers()
        self._client: MediaClient | None = None
        self._up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sessions: dict[str, tuple[str, SessionKind]] = {}
        self._lost: dict[str, tuple[str, SessionKind]] = {}
        self._was_up = False
        self.last_exit_code: int | None = None
        """How the last worker process ended (negative: killed by that signal); None if none has."""
        self._background: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The pid of the worker taking calls now, None while there is none."""
        return self._client.pid if self._client is not None else None

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        return self._subscribers.subscribe(callback)

    async def start(self) -> None:
        """Start the worker in the background; calls wait for it to be ready."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._supervise(), name=f"media-supervisor-{self.index}")

    async def wait_ready(self) -> int:
        """The pid of a worker ready for calls, waiting (within the call timeout) if it is (re)starting."""
        client = await self._ready_client(asyncio.get_running_loop().time() + self.timeout)
        assert client.pid is not None
        return client.pid

    async def stop(self) -> None:
        """Close the channel and let the worker end its sessions; SIGTERM, then SIGKILL, if it lingers."""
        if self._task is None:
            return
        self._stopping.set()
        task, self._task = self._task, None
        await task
        for abandoned in list(self._background):
            abandoned.cancel()

    async def call(self, method: str, params: dict[str, str]) -> Any:
        deadline = asyncio.get_running_loop().time() + self.timeout
        client = await self._ready_client(deadline)
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
        on_late = None
        if method in ("open_publisher", "open_viewer"):
            on_late = functools.partial(self._abandon, client, params["session_id"])
        result = await client.call(method, params, within=remaining, on_late=on_late)
        if client is self._client:
            self._track(method, params)
        return result

    async def _ready_client(self, deadline: float) -> MediaClient:
        while self._client is None:
            if self._task is None or self._stopping.is_set():
                raise MediaError("media_unavailable", "the media worker is not running", 503)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._up.wait()
            except TimeoutError:
                raise MediaError("media_unavailable", "the media worker is starting; try again shortly",
                                 503) from None
        return self._client

    def _abandon(self, client: MediaClient, session_id: str, _answer: Any) -> None:
        """A session came up after its caller gave up on it: nobody will use or close it, so close it now."""

        async def close() -> None:
            with contextlib.suppress(MediaError):
                await client.call("close_session", {"session_id": session_id}, within=self.timeout * 2)

        task = asyncio.create_task(close(), name=f"media-abandon-{session_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _track(self, method: str, params: dict[str, str]) -> None:
        """Remember open sessions, to announce them as closed if the worker dies under them."""
        if method == "open_publisher":
            self._sessions[params["session_id"]] = (params["room"], "publisher")
        elif method == "open_viewer":
            self._sessions[params["session_id"]] = (params["room"], "viewer")
        elif method == "close_session":
            self._sessions.pop(params["session_id"], None)

    def _on_event(self, event: MediaEvent) -> None:
        if event.type == "session.closed" and event.session_id is not None:
            self._sessions.pop(event.session_id, None)
        self._subscribers.emit(event)

    def _lost_error(self) -> MediaError:
        if self._stopping.is_set():
            return MediaError("media_unavailable", "the media worker is shutting down", 503)
        return MediaError("media_restarted", "the media worker stopped and is being restarted; open the session "
                          "again", 503)

    async def _supervise(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            backoff.started()
            try:
                process = await self._incarnation()
                self.last_exit_code = process.returncode if process is not None else None
            except Exception:
                logger.exception("media worker supervision failed", extra={"worker": self.index})
            if self._stopping.is_set():
                return
            delay = backoff.delay()
            logger.error("media worker exited; restarting it", extra={
                "worker": self.index, "exit_code": self.last_exit_code, "restart_in_seconds": delay})
            await self._until_stopped(asyncio.sleep(delay))

    async def _incarnation(self) -> asyncio.subprocess.Process | None:
        """Run one worker process from start to exit (None if it could not be started)."""
        try:
            process, client = await self._spawn()
        except OSError as exc:
            logger.error("cannot start the media worker", extra={"worker": self.index, "error": str(exc)})
            return None
        up = False
        try:
            try:
                pid = await self._until_stopped(client.wait_ready(), self.start_timeout)
            except MediaError:
                pid = None
            if pid is None:
                if not self._stopping.is_set() and process.returncode is None:
                    logger.error("media worker did not become ready", extra={
                        "worker": self.index, "pid": process.pid, "timeout_seconds": self.start_timeout})
                return process
            up = True
            if not client.closed:
                self._client = client
                self._up.set()
            logger.info("media worker ready", extra={"worker": self.index, "pid": pid})
            self._announce_restart(pid)
            await self._until_stopped(self._gone(process, client))
            return process
        finally:
            self._detach(client)
            await self._end(process, client, graceful=up)
            if not self._stopping.is_set():
                self._sessions_lost()

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, MediaClient]:
        parent, child = socket.socketpair()
        try:
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._command(child.fileno()), pass_fds=(child.fileno(),), stdin=DEVNULL, env=self._env(),
                    start_new_session=True)  # Ctrl-C reaches the server, which stops the worker in order
            finally:
                child.close()
            reader, writer = await asyncio.open_connection(sock=parent, limit=MAX_LINE)
        except BaseException:
            parent.close()
            raise
        client: MediaClient = MediaClient(reader, writer, timeout=self.timeout, lost=self._lost_error,
                                          on_close=lambda: self._detach(client))
        client.subscribe(self._on_event)
        logger.info("media worker started", extra={"worker": self.index, "pid": process.pid})
        with contextlib.suppress(MediaError):  # a worker dead already is seen by wait_ready
            await client.send_init({"media": self.settings.model_dump(mode="json"),
                                    "logging": self.logging_settings.model_dump(mode="json"),
                                    "worker": self.index})
        return process, client

    def _command(self, fd: int) -> list[str]:
        command = [sys.executable, "-m", "media.worker", "--control-fd", str(fd)]
        return [*command, "--service", self.service] if self.service else command

    @staticmethod
    def _env() -> dict[str, str]:
        return child_environment()

    def _detach(self, client: MediaClient) -> None:
        """Calls stop going to `client` the moment its connection is found closed."""
        if self._client is client:
            self._client = None
            self._up.clear()

    @staticmethod
    async def _gone(process: asyncio.subprocess.Process, client: MediaClient) -> None:
        """Until the worker exits or hangs up (a worker without its channel is of no use)."""
        waits = {asyncio.ensure_future(process.wait()), asyncio.ensure_future(client.wait_closed())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _end(self, process: asyncio.subprocess.Process, client: MediaClient, graceful: bool) -> None:
        """Let the worker finish (after closing the channel if it was serving); SIGTERM, then SIGKILL.
        A worker still starting has no session to close: it gets SIGTERM at once."""
        expected_to_exit = graceful or client.closed
        if process.returncode is None and expected_to_exit:
            client.end_requests()
            await self._wait_exit(process, self.stop_grace)
        for signum, grace in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, None)):
            if process.returncode is not None:
                break
            extra = {"worker": self.index, "pid": process.pid, "signal": signum.name}
            if expected_to_exit or signum == signal.SIGKILL:
                logger.warning("media worker still running; signalling it", extra=extra)
            else:
                logger.info("stopping a media worker that is still starting", extra=extra)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            await self._wait_exit(process, grace)
        await client.close()

    @staticmethod
    async def _wait_exit(process: asyncio.subprocess.Process, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), seconds)

    def _sessions_lost(self) -> None:
        lost, self._sessions = self._sessions, {}
        self._lost.update(lost)
        for session_id, (room, kind) in lost.items():
            self._subscribers.emit(MediaEvent("session.closed", room=room, session_id=session_id, kind=kind,
                                              data={"reason": "worker_died"}))

    def _announce_restart(self, pid: int) -> None:
        if self._was_up:
            self.restarts += 1
            lost, self._lost = self._lost, {}
            logger.info("media worker restarted", extra={"worker": self.index, "pid": pid, "sessions_lost": len(lost)})
            self._subscribers.emit(MediaEvent("worker.restarted", data={
                "worker": self.index, "pid": pid, "exit_code": self.last_exit_code, "restarts": self.restarts,
                "sessions": sorted(lost), "rooms": sorted({room for room, _kind in lost.values()})}))
        self._was_up = True

    async def _until_stopped(self, awaitable: Awaitable[T], seconds: float | None = None) -> T | None:
        """`awaitable`'s result, or None (having cancelled it) once stop() is called or `seconds` pass."""
        work = asyncio.ensure_future(awaitable)
        stopped = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({work, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        return None if work.cancelled() else work.result()
