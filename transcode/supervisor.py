"""One room's packager process, kept running for the length of a show: started, restarted with the media
worker's backoff if it dies, and stopped with SIGTERM so it finalises its playlist and recording."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from config.schema import LoggingSettings
from media.supervisor import Backoff, child_environment
from transcode.packager import PackagerConfig

logger = logging.getLogger(__name__)

START_TIMEOUT = 15.0
STOP_GRACE = 10.0
"""Seconds a packager gets to write its last segment and close the recording before SIGKILL."""


class PackagerProcess:
    """`on_port(port)` runs each time a packager is up and listening (the caller points a tap at it)."""

    def __init__(self, config: PackagerConfig, logging_settings: LoggingSettings,
                 on_port: Callable[[int], Awaitable[None]]) -> None:
        self.config = config
        self.logging_settings = logging_settings
        self.on_port = on_port
        self.port: int | None = None
        self.starts = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"packager-{self.config.room}")

    async def stop(self) -> None:
        """SIGTERM: the packager finishes the live playlist (EXT-X-ENDLIST) and the recording, then exits."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _supervise(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            backoff.started()
            try:
                await self._incarnation()
            except Exception:
                logger.exception("packager supervision failed", extra={"room": self.config.room})
            if self._stopping.is_set():
                return
            delay = backoff.delay()
            logger.error("packager exited; restarting it", extra={"room": self.config.room, "restart_in": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _incarnation(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "transcode.packager", "--config", self.config.model_dump_json(),
            "--logging", self.logging_settings.model_dump_json(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=child_environment())
        self.starts += 1
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
            self.port = int(json.loads(line)["port"])
            await self.on_port(self.port)
            stopping = asyncio.ensure_future(self._stopping.wait())
            exited = asyncio.ensure_future(process.wait())
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            exited.cancel()
        except (TimeoutError, ValueError, KeyError) as exc:
            logger.error("packager did not start", extra={"room": self.config.room, "error": repr(exc)})
        finally:
            self.port = None
            await _end(process)


async def _end(process: asyncio.subprocess.Process) -> None:
    for signum, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
        if process.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
    if process.stdin is not None:
        process.stdin.close()  # the last open pipe: the transport closes with it, not later in a finaliser
