"""The media worker process: `python -m media.worker --control-fd N`, started by MediaSupervisor.

Its settings arrive as the first message on the control socket (argv is visible to every local user). Each
request runs in a task of its own, so a slow SDP negotiation never holds up a stats call, and a request that
fails, however it fails, is answered with an error and leaves the worker serving. The worker ends when the
channel closes (the web process stopped or died) or on SIGTERM, closing every peer connection first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Protocol, cast

from pydantic import ValidationError

from config.logs import configure_logging
from config.schema import LoggingSettings, MediaSettings
from media.api import MediaControl, MediaError, MediaEvent
from media.calls import dispatch
from media.protocol import (
    MAX_LINE,
    Event,
    Init,
    Message,
    MessageReader,
    ProtocolError,
    Ready,
    Request,
    Response,
    encode,
)

logger = logging.getLogger("media.worker")  # not __name__: that is "__main__" under -m

INIT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0
"""Seconds the service gets to close its peer connections before the worker exits anyway."""

EXIT_BAD_START = 2


class WorkerService(MediaControl, Protocol):
    """What runs inside the worker: the media calls, plus closing every session at exit."""

    async def close(self) -> None: ...


ServiceFactory = Callable[[MediaSettings, Callable[[MediaEvent], None]], WorkerService]


def load_service(spec: str | None) -> ServiceFactory:
    """media.rooms.MediaService, or the "module:Class" a test names instead."""
    if spec is None:
        from media.rooms import MediaService

        return MediaService
    module, _, name = spec.partition(":")
    return cast(ServiceFactory, getattr(importlib.import_module(module), name))


class Channel:
    """The worker's sending side. Writes never wait: the web process always reads, and an event emitted from
    a callback cannot await."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def send(self, message: Message) -> None:
        try:
            line = encode(message)
        except ProtocolError as exc:
            logger.error("media worker message not sent", extra={"reason": exc.reason})
            if not isinstance(message, Response):
                return
            line = encode(Response(message.id, error=MediaError(
                "media_bad_response", "the media worker could not encode its answer", 500)))
        if not self._writer.is_closing():
            self._writer.write(line)

    def emit(self, event: MediaEvent) -> None:
        self.send(Event(event))

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class Worker:
    """Serves requests from one channel until it closes or `stop` is set."""

    def __init__(self, service: WorkerService, channel: Channel) -> None:
        self.service = service
        self.channel = channel
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, messages: MessageReader) -> None:
        reading = asyncio.create_task(self._read(messages))
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reading, stopping, *self._tasks):
            task.cancel()
        await asyncio.gather(reading, stopping, *self._tasks, return_exceptions=True)

    async def _read(self, messages: MessageReader) -> None:
        while True:
            try:
                message = await messages.read()
            except ProtocolError as exc:
                logger.warning("malformed request", extra={"reason": exc.reason})
                if exc.request_id is not None:
                    self.channel.send(Response(exc.request_id, error=MediaError("bad_request", exc.reason)))
                continue
            except ConnectionError:
                return
            if message is None:
                return
            if not isinstance(message, Request):
                logger.warning("unexpected message", extra={"type": type(message).__name__})
                continue
            task = asyncio.create_task(self._answer(message), name=f"media-{message.method[:40]}-{message.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Request) -> None:
        try:
            response = Response(request.id, result=await dispatch(self.service, request.method, request.params))
        except MediaError as exc:
            response = Response(request.id, error=exc)
        except Exception:
            logger.exception("media request failed", extra={"method": request.method})
            response = Response(request.id, error=MediaError(
                "media_internal", "the media worker failed on this request", 500))
        self.channel.send(response)


async def run(control_fd: int, service_spec: str | None) -> int:
    sock = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
    channel = Channel(writer)
    messages = MessageReader(reader)
    try:
        settings = await _read_init(messages)
        if settings is None:
            return EXIT_BAD_START
        service = load_service(service_spec)(settings, channel.emit)
        worker = Worker(service, channel)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop.set)
        channel.send(Ready(os.getpid()))
        logger.info("media worker serving", extra={"pid": os.getpid()})
        try:
            await worker.serve(messages)
        finally:
            await _close(service)
        logger.info("media worker stopped")
        return 0
    finally:
        await channel.close()


async def _read_init(messages: MessageReader) -> MediaSettings | None:
    """Read the settings and configure logging; None (logged) when they do not come or do not validate."""
    try:
        async with asyncio.timeout(INIT_TIMEOUT):
            message = await messages.read()
    except (TimeoutError, ProtocolError, ConnectionError) as exc:
        logger.error("media worker got no settings", extra={"error": str(exc) or type(exc).__name__})
        return None
    if not isinstance(message, Init):
        logger.error("media worker got no settings", extra={"got": type(message).__name__})
        return None
    try:
        media = MediaSettings.model_validate(message.config.get("media", {}))
        log_settings = LoggingSettings.model_validate(message.config.get("logging", {}))
    except ValidationError as exc:
        logger.error("media worker settings invalid", extra={"problems": exc.errors(include_url=False)})
        return None
    index = message.config.get("worker", 0)
    configure_logging(log_settings)
    _tag_logs(index if isinstance(index, int) else 0)
    return media


def _tag_logs(index: int) -> None:
    """Every line this process logs says which worker wrote it (they share the server's stderr)."""

    def tag(record: logging.LogRecord) -> bool:
        record.media_worker = index
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


async def _close(service: WorkerService) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await service.close()
    except TimeoutError:
        logger.error("media service did not close in time", extra={"timeout_seconds": CLOSE_TIMEOUT})
    except Exception:
        logger.exception("media service failed to close")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m media.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--control-fd", type=int, required=True, help="socket inherited from the supervisor")
    parser.add_argument("--service", help="module:Class to serve instead of media.rooms:MediaService (tests)")
    args = parser.parse_args(argv)
    # The supervisor stops this process in order; a Ctrl-C meant for the server must not cut in first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(LoggingSettings())  # JSON from the first line, before the real settings arrive
    try:
        return asyncio.run(run(args.control_fd, args.service))
    except Exception:
        logger.exception("media worker crashed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
