"""Tables of rooms: rooms with their co-hosts, the shows held in them, and who publishes into a show.

Services hand callers the frozen values of `rooms.values` instead of these rows.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from accounts.models import UserRow
from store.base import Base, BigId

LIVE_CONDITION = "status = 'live'"


class RoomRow(Base):
    """A channel with a stable slug (its URL and its event topic); shows happen in it one after another."""

    __tablename__ = "rooms"
    __table_args__ = (
        CheckConstraint("visibility IN ('public', 'unlisted')", name="visibility"),
        CheckConstraint("guest_policy IN ('watch_and_chat', 'no_guests')", name="guest_policy"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id), index=True)
    title: Mapped[str] = mapped_column(String(200))
    visibility: Mapped[str] = mapped_column(String(10))
    guest_policy: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[int] = mapped_column(BigInteger)
    program_publisher_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The publisher session viewers currently see when several publish into the live show."""


class RoomCohostRow(Base):
    """A host other than the owner who may publish into the room."""

    __tablename__ = "room_cohosts"

    room_id: Mapped[int] = mapped_column(BigId, ForeignKey(RoomRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False, index=True)


class ShowRow(Base):
    """One broadcast in a room: scheduled, then live, then ended. The partial unique index lets at most one
    show per room be live, on both backends, whatever races the application code loses."""

    __tablename__ = "shows"
    __table_args__ = (
        CheckConstraint("status IN ('scheduled', 'live', 'ended')", name="status"),
        Index("uq_shows_room_live", "room_id", unique=True,
              sqlite_where=text(LIVE_CONDITION), postgresql_where=text(LIVE_CONDITION)),
        Index("ix_shows_room_status", "room_id", "status"),
        Index("ix_shows_status_scheduled_start", "status", "scheduled_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(BigId, ForeignKey(RoomRow.id, ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(10))
    scheduled_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class PublisherSessionRow(Base):
    """One media connection publishing into a show (a WHIP encoder or a browser), open until `ended_at`."""

    __tablename__ = "publisher_sessions"
    __table_args__ = (
        CheckConstraint("kind IN ('whip', 'browser')", name="kind"),
        Index("ix_publisher_sessions_show_ended", "show_id", "ended_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    show_id: Mapped[int] = mapped_column(BigId, ForeignKey(ShowRow.id, ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
