"""The overlay on the `/live` namespace: host controls (pins, flash sales, end of show, slow mode), chat
with moderation, reactions, viewer count, live stock, and private checkout events.

Handlers are thin: they check who asks, call `overlay.*` or commerce in one write transaction that also
writes the room event (`room_feed.publish`), and answer. Everything a snapshot shows is read from the
database, so any node answers a join the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, Unauthorized
from accounts.service import get_user
from bus import Event, Resync
from commerce import checkout_events
from commerce.inventory import STOCK_CHANGED
from config.schema import Settings
from overlay import chat, show
from rooms.live import end_show as end_live_show
from rooms.service import get_room
from rooms.values import Room, Show, can_publish
from signaling.live_room import Ack, Client, LiveRoom, RoomRequest, live_show
from signaling.presence import REACTIONS, Presence, viewer_count
from signaling.room_feed import publish
from signaling.stock_feed import StockFeed

logger = logging.getLogger(__name__)

_AUTHOR_MAX = 64


class PinRequest(RoomRequest):
    product_id: int = Field(ge=1)


class PinsRequest(RoomRequest):
    product_ids: list[int] = Field(max_length=100)


class SaleRequest(RoomRequest):
    product_id: int = Field(ge=1)
    price_minor: int = Field(ge=0)
    duration_seconds: int = Field(ge=1)
    quantity: int | None = Field(default=None, ge=1)


class SlowModeRequest(RoomRequest):
    seconds: int = Field(ge=0, le=3600)


class ChatRequest(RoomRequest):
    text: str = Field(max_length=10_000)


class MessageRequest(RoomRequest):
    message_id: int = Field(ge=1)


class SanctionRequest(RoomRequest):
    author: str = Field(min_length=1, max_length=_AUTHOR_MAX)
    seconds: int | None = Field(default=None, ge=0, le=365 * 86_400)


class ReactRequest(RoomRequest):
    kind: str = Field(min_length=1, max_length=16)


@dataclass(frozen=True)
class Member:
    """A socket in a room as the overlay sees it: who, shown as what, and whether it runs the room."""

    subject: str | None
    user_id: int | None
    name: str
    host: bool


class Overlay:
    """A `RoomExtension` of the live room, plus the overlay's requests."""

    def __init__(self, live: LiveRoom) -> None:
        self.live = live
        self.edge = live.edge
        self.members: dict[str, dict[str, Member]] = {}
        """Socket id → room → member."""
        self.stock = StockFeed(live.edge.database, lambda: self.settings.overlay)
        self.presence = Presence(live.edge.database, lambda: self.settings.overlay)
        live.extensions.append(self)

    @property
    def settings(self) -> Settings:
        return self.edge.settings()

    def register(self) -> None:
        on = self.live._on
        on("pin", PinRequest, self._pin)
        on("unpin", PinRequest, self._unpin)
        on("reorder_pins", PinsRequest, self._reorder)
        on("start_sale", SaleRequest, self._start_sale)
        on("stop_sale", RoomRequest, self._stop_sale)
        on("end_show", RoomRequest, self._end_show)
        on("set_slow_mode", SlowModeRequest, self._slow_mode)
        on("chat", ChatRequest, self._chat)
        on("delete_message", MessageRequest, self._delete_message)
        on("mute", SanctionRequest, self._mute)
        on("ban", SanctionRequest, self._ban)
        on("react", ReactRequest, self._react)

    # --- RoomExtension -------------------------------------------------------------------------------------

    async def snapshot(self, session: AsyncSession, room: Room, live_show: Show | None) -> dict[str, Any]:
        settings = self.settings
        pinned: list[dict[str, Any]] = []
        sale = None
        slow = 0
        if live_show is not None:
            ids = await show.pinned_ids(session, live_show.id)
            pinned = [card.to_dict() for card in await show.cards(session, live_show.id, ids,
                                                                  settings.overlay.low_stock)]
            sale = await show.current_sale(session, live_show.id)
            slow = await show.slow_mode(session, live_show.id)
        messages = await chat.history(session, room.id, settings.chat.history)
        return {"pinned": pinned, "sale": sale, "chat": [m.to_dict() for m in messages],
                "viewers": await viewer_count(session, room.slug),
                "slow_mode_seconds": max(slow, settings.chat.slow_mode_seconds),
                "max_pinned": settings.overlay.max_pinned}

    async def joining(self, sid: str, client: Client, room: Room) -> None:
        async with self.live.database.read() as session:
            await chat.require_not_banned(session, room.id, _subject(client))

    async def joined(self, sid: str, client: Client, room: Room) -> None:
        principal = client.principal
        name, host = "viewer", False
        if principal is not None and principal.user_id is not None:
            async with self.live.database.read() as session:
                user = await get_user(session, principal.user_id)
            name, host = user.display_name, can_publish(user, room)
        elif principal is not None:
            name = principal.nickname or "guest"
        self.members.setdefault(sid, {})[room.slug] = Member(
            subject=_subject(client), user_id=principal.user_id if principal is not None else None, name=name,
            host=host)
        self.presence.joined(room.slug)

    async def left(self, sid: str, slug: str) -> None:
        rooms = self.members.get(sid)
        if rooms is None or rooms.pop(slug, None) is None:
            return
        if not rooms:
            del self.members[sid]
        self.presence.left(slug)
        if slug not in self.live.feeds.rooms():
            self.stock.forget(slug)

    async def commerce_event(self, slug: str, item: Event | Resync) -> None:
        if isinstance(item, Resync):
            return
        if item.type == STOCK_CHANGED:
            self.stock.changed(slug, int(item.payload["product_id"]))
        elif item.type in (checkout_events.HOLD_CREATED, checkout_events.HOLD_EXPIRED,
                           checkout_events.ORDER_PAID, checkout_events.PAYMENT_DECLINED):
            await self._checkout(slug, item)

    async def room_event(self, slug: str, event: Event) -> None:
        if event.type == "member.banned":
            author = event.payload.get("author")
            for sid, rooms in list(self.members.items()):
                member = rooms.get(slug)
                if member is not None and member.subject == author:
                    await self.live.tell(sid, "banned", {"room": slug, "until": event.payload.get("until")})
                    await self.live.remove_from_room(sid, slug)

    async def _checkout(self, slug: str, event: Event) -> None:
        """The buyer hears of their own checkout privately; the room's hosts get paid orders as a ticker."""
        buyer = event.payload.get("user_id")
        payload = {"room": slug, **event.payload}
        for sid, rooms in list(self.members.items()):
            member = rooms.get(slug)
            if member is None:
                continue
            if member.user_id == buyer:
                await self.live.tell(sid, event.type, payload)
            if member.host and event.type == checkout_events.ORDER_PAID:
                await self.live.tell(sid, "sales.ticker", {
                    "room": slug, "order_id": event.payload["order_id"], "total_minor": event.payload["total_minor"],
                    "currency": event.payload["currency"], "items": event.payload["items"]})

    # --- host controls -------------------------------------------------------------------------------------

    async def _host(self, session: AsyncSession, client: Client, slug: str) -> tuple[Any, Room, Show]:
        """The acting host, the room and its live show; refusals as the other host requests."""
        user_id = self.live._account(client)
        user = await get_user(session, user_id)
        room = await get_room(session, slug)
        if not can_publish(user, room):
            raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins run the show")
        live_show = await self._live_show(session, room)
        return user, room, live_show

    @staticmethod
    async def _live_show(session: AsyncSession, room: Room) -> Show:
        found = await live_show(session, room)
        if found is None:
            raise Conflict("not_live", "the room has no live show", "room")
        return found

    async def _publish_pins(self, session: AsyncSession, room: Room, live_show: Show, ids: list[int]) -> None:
        cards = await show.cards(session, live_show.id, ids, self.settings.overlay.low_stock)
        await publish(session, room.slug, "pins.changed",
                      {"show_id": live_show.id, "pinned": [card.to_dict() for card in cards]})

    async def _change_pins(self, client: Client, slug: str,
                           change: Callable[[AsyncSession, int], Awaitable[list[int]]]) -> Ack:
        """Pin, unpin or reorder as the acting host, and tell the room the new cards in the same transaction."""
        async with self.live.database.write() as session:
            _user, room, live_show = await self._host(session, client, slug)
            ids = await change(session, live_show.id)
            await self._publish_pins(session, room, live_show, ids)
        return {"pinned": ids}

    async def _pin(self, sid: str, client: Client, request: PinRequest) -> Ack:
        max_pinned = self.settings.overlay.max_pinned
        return await self._change_pins(client, request.room, lambda session, show_id: show.pin(
            session, show_id, request.product_id, max_pinned))

    async def _unpin(self, sid: str, client: Client, request: PinRequest) -> Ack:
        return await self._change_pins(client, request.room, lambda session, show_id: show.unpin(
            session, show_id, request.product_id))

    async def _reorder(self, sid: str, client: Client, request: PinsRequest) -> Ack:
        return await self._change_pins(client, request.room, lambda session, show_id: show.reorder(
            session, show_id, request.product_ids))

    async def _start_sale(self, sid: str, client: Client, request: SaleRequest) -> Ack:
        async with self.live.database.write() as session:
            user, room, live_show = await self._host(session, client, request.room)
            sale = await show.start_sale(session, user, live_show.id, request.product_id,
                                         price_minor=request.price_minor, duration_seconds=request.duration_seconds,
                                         quantity=request.quantity)
            described = show.sale_dict(sale, request.quantity)
            await publish(session, room.slug, "sale.started", {"show_id": live_show.id, "sale": described})
            await self._publish_pins(session, room, live_show, await show.pinned_ids(session, live_show.id))
        return {"sale": described}

    async def _stop_sale(self, sid: str, client: Client, request: RoomRequest) -> Ack:
        async with self.live.database.write() as session:
            user, room, live_show = await self._host(session, client, request.room)
            product_id = await show.stop_sale(session, user, live_show.id)
            await publish(session, room.slug, "sale.ended", {"show_id": live_show.id, "product_id": product_id})
            await self._publish_pins(session, room, live_show, await show.pinned_ids(session, live_show.id))
        return {"product_id": product_id}

    async def _end_show(self, sid: str, client: Client, request: RoomRequest) -> Ack:
        async with self.live.database.write() as session:
            _user, _room, live_show = await self._host(session, client, request.room)
            ended = await end_live_show(session, live_show)
        await self.live.show_ended(ended)
        await self.edge.media().end_room(ended.room_slug)
        return {"show_id": ended.id, "ended_at": ended.ended_at}

    async def _slow_mode(self, sid: str, client: Client, request: SlowModeRequest) -> Ack:
        async with self.live.database.write() as session:
            _user, room, live_show = await self._host(session, client, request.room)
            seconds = await show.set_slow_mode(session, live_show.id, request.seconds)
            await publish(session, room.slug, "chat.slow_mode", {"seconds": seconds})
        return {"seconds": seconds}

    # --- chat ----------------------------------------------------------------------------------------------

    def _member(self, sid: str, slug: str) -> Member:
        member = self.members.get(sid, {}).get(slug)
        if member is None:
            raise Conflict("not_joined", "join the room first", "room")
        return member

    async def _chat(self, sid: str, client: Client, request: ChatRequest) -> Ack:
        member = self._member(sid, request.room)
        if member.subject is None:
            raise Unauthorized("sign_in_required", "sign in or get a guest token to chat")
        if member.user_id is not None:
            self.live._account(client)  # refuses a token that expired since connect
        async with self.live.database.write() as session:
            room = await get_room(session, request.room)
            if member.user_id is None and room.guest_policy == "no_guests":
                raise Forbidden("sign_in_required", "guests cannot chat in this room")
            live = await live_show(session, room)
            slow = await show.slow_mode(session, live.id if live is not None else None)
            author = chat.Author(member.subject, member.user_id, member.name, member.host)
            message = await chat.post(session, room.id, author, request.text, self.settings.chat, slow)
            await publish(session, room.slug, "chat.message", message.to_dict())
        return {"message": message.to_dict()}

    async def _moderator(self, session: AsyncSession, client: Client, slug: str) -> tuple[int, Room]:
        user_id = self.live._account(client)
        user = await get_user(session, user_id)
        room = await get_room(session, slug)
        if not can_publish(user, room):
            raise Forbidden("not_moderator", "only the room's owner, co-hosts and admins moderate its chat")
        return user_id, room

    async def _delete_message(self, sid: str, client: Client, request: MessageRequest) -> Ack:
        async with self.live.database.write() as session:
            user_id, room = await self._moderator(session, client, request.room)
            message = await chat.delete_message(session, room.id, request.message_id, user_id)
            await publish(session, room.slug, "chat.deleted", {"message_id": message.id})
        return {"message_id": message.id}

    async def _mute(self, sid: str, client: Client, request: SanctionRequest) -> Ack:
        seconds = 300 if request.seconds is None else request.seconds
        async with self.live.database.write() as session:
            user_id, room = await self._moderator(session, client, request.room)
            until = await chat.impose(session, room.id, request.author, "mute", seconds, user_id)
            await publish(session, room.slug, "chat.muted", {"author": request.author, "until": until})
        return {"until": until}

    async def _ban(self, sid: str, client: Client, request: SanctionRequest) -> Ack:
        async with self.live.database.write() as session:
            user_id, room = await self._moderator(session, client, request.room)
            until = await chat.impose(session, room.id, request.author, "ban", request.seconds, user_id)
            await publish(session, room.slug, "member.banned", {"author": request.author, "until": until})
        return {"until": until}

    async def _react(self, sid: str, client: Client, request: ReactRequest) -> Ack:
        self._member(sid, request.room)
        if request.kind not in REACTIONS:
            raise Invalid("invalid_reaction", f"kind must be one of {', '.join(REACTIONS)}", "kind")
        self.presence.react(sid, request.room, request.kind)
        return {}


def _subject(client: Client) -> str | None:
    return client.principal.subject if client.principal is not None else None

