"""Tables of the overlay: a show's pins and chat settings, chat messages, room sanctions, presence per node,
and the last value announced of coalesced state (stock, viewer count) so several nodes announce it once."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from accounts.models import UserRow
from rooms.models import RoomRow, ShowRow
from store.base import Base, BigId

SANCTION_CHECK = "kind IN ('mute', 'ban')"


class ShowOverlayRow(Base):
    """What the host put on screen in a show: pinned products in order, chat slow mode, the flash sale shown."""

    __tablename__ = "show_overlays"

    show_id: Mapped[int] = mapped_column(BigId, ForeignKey(ShowRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    pinned: Mapped[list[int]] = mapped_column(JSON)
    """Product ids, first shown first."""
    slow_mode_seconds: Mapped[int] = mapped_column(Integer)
    sale_product_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The product whose flash sale the host started from the studio (its window is in `flash_sales`)."""
    sale_quantity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ChatMessageRow(Base):
    """One chat message as typed (plain text; clients render it as text, never as HTML)."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        Index("ix_chat_messages_room_id_id", "room_id", "id"),
        Index("ix_chat_messages_room_author_at", "room_id", "author", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(BigId, ForeignKey(RoomRow.id, ondelete="CASCADE"))
    author: Mapped[str] = mapped_column(String(64))
    """The token subject: a user id, or "guest:<id>"."""
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(String(10_000))
    created_at: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deleted_by: Mapped[int | None] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="SET NULL"),
                                                   nullable=True)


class RoomSanctionRow(Base):
    """A moderator's mute (until a time) or ban (until a time, or for good) of one author in a room."""

    __tablename__ = "room_sanctions"
    __table_args__ = (CheckConstraint(SANCTION_CHECK, name="kind"),)

    room_id: Mapped[int] = mapped_column(BigId, ForeignKey(RoomRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    author: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    by_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="SET NULL"),
                                                   nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class RoomPresenceRow(Base):
    """How many sockets one node holds in a room; the room's viewer count is the sum over fresh rows."""

    __tablename__ = "room_presence"

    room: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class AnnouncedRow(Base):
    """The last value of a coalesced state announced on a room (stock of a product, viewer count): a node
    announces only when its conditional upsert changes this row, so two nodes never announce it twice."""

    __tablename__ = "overlay_announced"

    room: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4000))
    """Canonical JSON text, compared as a string (PostgreSQL's json type has no equality)."""
    updated_at: Mapped[int] = mapped_column(BigInteger)
