"""MediaControl over one connection to one media worker: calls matched to answers by id, each with a deadline,
and the worker's events handed to subscribers. It knows nothing of processes; the supervisor owns those."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from media.api import MediaError, MediaEvent
from media.calls import RemoteMedia
from media.protocol import Event, Init, Message, MessageReader, ProtocolError, Ready, Request, Response, encode

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 15.0
"""Seconds a call may take, SDP negotiation with ICE gathering included, before it fails with 503."""

EventCallback = Callable[[MediaEvent], None]


def unavailable() -> MediaError:
    return MediaError("media_unavailable", "the media worker is not running", 503)


class Subscribers:
    """Event callbacks, called in order on the event loop; one that raises is logged and the rest still run."""

    def __init__(self) -> None:
        self._callbacks: list[EventCallback] = []

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback` with every event from now on; the returned function undoes it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def emit(self, event: MediaEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("media event subscriber failed", extra={"event_type": event.type})


class MediaClient(RemoteMedia):
    """One connection to one worker. `lost` makes the error pending and later calls fail with once the
    connection is gone (the supervisor says whether that is a restart or a shutdown); `on_close` runs once,
    as soon as the connection is found closed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float = CALL_TIMEOUT, lost: Callable[[], MediaError] = unavailable,
                 on_close: Callable[[], None] | None = None) -> None:
        self.timeout = timeout
        self._on_close = on_close
        self.pid: int | None = None
        self._writer = writer
        self._lost = lost
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscribers = Subscribers()
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._reader_task = asyncio.create_task(self._read_loop(MessageReader(reader)), name="media-client")

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        return self._subscribers.subscribe(callback)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def send_init(self, config: dict[str, Any]) -> None:
        """The first message the worker reads: its settings."""
        await self._send(encode(Init(config)))

    async def wait_ready(self) -> int:
        """The worker's pid once its service is up; the `lost` error if the connection ends first."""
        await self._ready.wait()
        if self.pid is None:
            raise self._lost()
        return self.pid

    async def call(self, method: str, params: dict[str, str], within: float | None = None,
                   on_late: Callable[[Any], None] | None = None) -> Any:
        """Send one call and wait at most `within` seconds (default `timeout`) for its answer. Should the
        caller give up first (timeout, cancellation), `on_late` gets the result if the worker answers later."""
        if self.closed:
            raise self._lost()
        limit = self.timeout if within is None else within
        request_id = next(self._ids)
        try:
            line = encode(Request(request_id, method, params))
        except ProtocolError as exc:
            raise MediaError("request_too_large", exc.reason, 413) from None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(limit):
                await self._send(line)
                return await asyncio.shield(future)
        except TimeoutError:
            raise MediaError("media_timeout", f"the media worker did not answer {method} within {limit:g} s",
                             503) from None
        finally:
            if on_late is not None and not future.done():
                future.add_done_callback(lambda done: self._late(request_id, done, on_late))
            else:
                self._pending.pop(request_id, None)

    def _late(self, request_id: int, future: asyncio.Future[Any], on_late: Callable[[Any], None]) -> None:
        self._pending.pop(request_id, None)
        if not future.cancelled() and future.exception() is None:
            on_late(future.result())

    def fail_pending(self, error: MediaError) -> None:
        """Fail every call still waiting for an answer (the worker is gone or going)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MediaError(error.code, error.message, error.status, error.field))
        self._pending.clear()

    def end_requests(self) -> None:
        """Half-close: the worker reads end-of-stream, shuts down, and its last events still reach us."""
        if not self._writer.is_closing() and self._writer.can_write_eof():
            with contextlib.suppress(OSError):
                self._writer.write_eof()

    async def wait_closed(self) -> None:
        """Until the worker closes its end (it has exited or is about to)."""
        await self._closed.wait()

    async def close(self) -> None:
        """Close the channel (a worker reads that as "shut down") and wait for the reader to finish."""
        self._writer.close()
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)
        self._finish()

    async def _send(self, line: bytes) -> None:
        if self._writer.is_closing():
            raise self._lost()
        try:
            self._writer.write(line)
            await self._writer.drain()
        except ConnectionError:
            raise self._lost() from None

    async def _read_loop(self, reader: MessageReader) -> None:
        try:
            while True:
                try:
                    message = await reader.read()
                except ProtocolError as exc:
                    self._bad_message(exc)
                    continue
                if message is None:
                    return
                self._handle(message)
        except OSError as exc:  # a reset: the worker died with requests unread; its supervisor reports that
            logger.info("media worker connection lost", extra={"error": str(exc)})
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.closed:
            return
        self._closed.set()
        self.fail_pending(self._lost())
        self._ready.set()
        self._writer.close()
        if self._on_close is not None:
            self._on_close()

    def _handle(self, message: Message) -> None:
        match message:
            case Response(request_id, result, error):
                future = self._pending.get(request_id)
                if future is None or future.done():
                    return  # answered after its caller gave up
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            case Event(event):
                self._subscribers.emit(event)
            case Ready(pid):
                self.pid = pid
                self._ready.set()
            case _:
                logger.warning("unexpected message from the media worker", extra={"type": type(message).__name__})

    def _bad_message(self, exc: ProtocolError) -> None:
        logger.warning("malformed message from the media worker", extra={"reason": exc.reason})
        future = self._pending.get(exc.request_id) if exc.request_id is not None else None
        if future is not None and not future.done():
            future.set_exception(MediaError("media_bad_response", "the media worker sent a malformed answer", 502))
