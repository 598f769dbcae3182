"""Chat in a room: plain-text messages under a length limit, a per-author rate limit and slow mode, the
banned words and link policy of the config (read on every message, so reloads apply at once), and the
moderators' tools: delete a message, mute an author for a while, ban an author from the room.

Limits are counted from the stored messages, so they hold across nodes; sanctions are rows, so they
survive restarts. Clients render messages as text: nothing here escapes, because nothing may interpret.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from config.schema import ChatSettings
from overlay.models import ChatMessageRow, RoomSanctionRow
from store import clock

RATE_WINDOW_MS = 10_000
NAME_MAX = 100
_LINK = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|co|"
                   r"shop|store|me|info|biz|app|xyz|ly|gg|tv|link|click|site|online|ru|de|uk|fr)\b(?:/\S*)?")


class ChatRefused(DomainError):
    """A message the room's rules refuse (rate, slow mode, mute, ban)."""

    http_status = 429


@dataclass(frozen=True)
class Author:
    """Who writes: the token subject (a user id or "guest:<id>"), the account if any, the shown name."""

    subject: str
    user_id: int | None
    name: str
    moderator: bool


@dataclass(frozen=True)
class Message:
    id: int
    author: str
    user_id: int | None
    name: str
    text: str
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "user_id": self.user_id, "name": self.name,
                "text": self.text, "created_at": self.created_at}

    @classmethod
    def from_row(cls, row: ChatMessageRow) -> Message:
        return cls(id=row.id, author=row.author, user_id=row.user_id, name=row.name, text=row.text,
                   created_at=row.created_at)


def clean(text: str, settings: ChatSettings) -> str:
    """The text as stored, or Invalid: trimmed, within the length limit, without control characters."""
    text = text.strip()
    if not text:
        raise Invalid("empty_message", "write something", "text")
    if len(text) > settings.max_length:
        raise Invalid("message_too_long", f"messages are at most {settings.max_length} characters", "text")
    if any(unicodedata.category(character) in ("Cc", "Cf") for character in text):
        raise Invalid("invalid_characters", "messages are plain text without control characters", "text")
    lowered = text.casefold()
    for word in settings.banned_words:
        if word and re.search(rf"(?<!\w){re.escape(word.casefold())}(?!\w)", lowered):
            raise Invalid("banned_word", "the message contains a word this server does not allow", "text")
    return text


def has_link(text: str) -> bool:
    return _LINK.search(text) is not None


async def sanction(session: AsyncSession, room_id: int, subject: str, kind: str, now: int) -> RoomSanctionRow | None:
    """The author's mute or ban in the room, if it is still in force."""
    row = await session.get(RoomSanctionRow, (room_id, subject, kind), populate_existing=True)
    if row is None or (row.until is not None and row.until <= now):
        return None
    return row


async def require_not_banned(session: AsyncSession, room_id: int, subject: str | None) -> None:
    if subject is not None and await sanction(session, room_id, subject, "ban", clock.now_ms()) is not None:
        raise Forbidden("banned", "you are banned from this room")


async def post(session: AsyncSession, room_id: int, author: Author, text: str, settings: ChatSettings,
               slow_mode_seconds: int) -> Message:
    """Store a message if the room's rules allow it; refusals name their rule in the error code."""
    now = clock.now_ms()
    text = clean(text, settings)
    if settings.links == "block" and not author.moderator and has_link(text):
        raise Invalid("links_not_allowed", "links are not allowed in this chat", "text")
    await require_not_banned(session, room_id, author.subject)
    muted = await sanction(session, room_id, author.subject, "mute", now)
    if muted is not None:
        raise ChatRefused("muted", f"you are muted until {muted.until}", "until")
    if not author.moderator:
        recent = int(await session.scalar(select(func.count()).select_from(ChatMessageRow).where(
            ChatMessageRow.room_id == room_id, ChatMessageRow.author == author.subject,
            ChatMessageRow.created_at > now - RATE_WINDOW_MS)) or 0)
        if recent >= settings.messages_per_10s:
            raise ChatRefused("rate_limited", f"at most {settings.messages_per_10s} messages per 10 seconds")
        slow = max(slow_mode_seconds, settings.slow_mode_seconds)
        if slow:
            last = await session.scalar(select(func.max(ChatMessageRow.created_at)).where(
                ChatMessageRow.room_id == room_id, ChatMessageRow.author == author.subject))
            if last is not None and last > now - slow * 1000:
                raise ChatRefused("slow_mode", f"slow mode: one message every {slow} seconds; next at "
                                  f"{last + slow * 1000}", "text")
    row = ChatMessageRow(room_id=room_id, author=author.subject, user_id=author.user_id,
                         name=author.name[:NAME_MAX], text=text, created_at=now, deleted_at=None, deleted_by=None)
    session.add(row)
    await session.flush()
    return Message.from_row(row)


async def delete_message(session: AsyncSession, room_id: int, message_id: int, moderator_id: int) -> Message:
    row = await session.get(ChatMessageRow, message_id, populate_existing=True)
    if row is None or row.room_id != room_id:
        raise NotFound("message_not_found", "no such message in this room", "message_id")
    if row.deleted_at is not None:
        raise Conflict("message_deleted", "the message is already deleted", "message_id")
    row.deleted_at, row.deleted_by = clock.now_ms(), moderator_id
    await session.flush()
    return Message.from_row(row)


async def impose(session: AsyncSession, room_id: int, subject: str, kind: str, seconds: int | None,
                 moderator_id: int) -> int | None:
    """Mute or ban `subject` for `seconds` (None: a ban for good); returns the end time. Imposing again
    replaces the earlier one; 0 seconds lifts it."""
    now = clock.now_ms()
    until = None if seconds is None else now + seconds * 1000
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(RoomSanctionRow).values(room_id=room_id, author=subject, kind=kind, until=until,
                                               by_user_id=moderator_id, created_at=now)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[RoomSanctionRow.room_id, RoomSanctionRow.author, RoomSanctionRow.kind],
        set_={"until": until, "by_user_id": moderator_id, "created_at": now}))
    return until


async def history(session: AsyncSession, room_id: int, limit: int) -> list[Message]:
    """The room's last `limit` messages that are not deleted, oldest first."""
    if limit <= 0:
        return []
    rows = (await session.execute(select(ChatMessageRow).where(
        ChatMessageRow.room_id == room_id, ChatMessageRow.deleted_at.is_(None))
        .order_by(ChatMessageRow.id.desc()).limit(limit))).scalars().all()
    return [Message.from_row(row) for row in reversed(rows)]
