"""Bounded per-client queues and a direct room broadcast.

A slow client cannot make the server hold an ever-growing backlog for it.

Engine.IO queues every outgoing packet per socket without limit (`AsyncSocket.queue`), and a room emit only
puts packets on those queues, so a slow reader never stalls the room, but its queue would grow for as long
as it stays connected. `BoundedServer` checks the queue before each packet: a client `max_queued` packets
behind has its backlog dropped and is disconnected. It reconnects and joins again, from a fresh snapshot:
dropped to resync, as the live-room protocol expects of any client that missed events.

`broadcast_local` is the room fan-out of the live rooms: the packet is encoded once and put straight on each
local socket's queue, without python-socketio's task per recipient (`AsyncManager.emit` creates and awaits
one task per socket, which for thousands of sockets is most of the cost of a broadcast).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from signaling.background import spawn

logger = logging.getLogger(__name__)

SLOW_CLIENT_REASON = "slow client"


class BoundedServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *args: Any, max_queued: int = 256, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_queued = max_queued
        self.dropped = 0
        """Clients disconnected for falling behind (for tests and metrics)."""

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.closed and socket.queue.qsize() >= self.max_queued:
            self._drop(eio_sid, socket)
            return
        await super()._send_eio_packet(eio_sid, eio_pkt)

    def broadcast_local(self, event: str, data: Any, namespace: str, room: str) -> int:
        """Queue one event for every socket of `room` on this node; returns how many got it."""
        encoded = self.packet_class(packet.EVENT, namespace=namespace, data=[event, data]).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part)
                   for part in (encoded if isinstance(encoded, list) else [encoded])]
        sent = 0
        for _sid, eio_sid in list(self.manager.get_participants(namespace, room)):
            socket = self.eio.sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                continue
            if socket.queue.qsize() >= self.max_queued:
                self._drop(eio_sid, socket)
                continue
            for item in packets:
                socket.queue.put_nowait(item)
            sent += 1
        return sent

    def _drop(self, eio_sid: str, socket: Any) -> None:
        """Forget the backlog, end the writer once it finishes the packet in flight, and run the disconnect
        handlers now (the live room forgets the socket)."""
        queue: asyncio.Queue[Any] = socket.queue
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
        queue.put_nowait(None)
        self.dropped += 1
        logger.warning("client fell %d messages behind; disconnected to resync", self.max_queued)
        spawn(socket.close(wait=False, abort=True))
