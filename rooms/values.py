"""What callers get to know about rooms, shows and publisher sessions: frozen values, safe to keep after the
transaction that read them and to pass into the next one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from accounts.user import User
from rooms.models import PublisherSessionRow, RoomRow, ShowRow

Visibility = Literal["public", "unlisted"]
GuestPolicy = Literal["watch_and_chat", "no_guests"]
ShowStatus = Literal["scheduled", "live", "ended"]
PublisherKind = Literal["whip", "browser"]
VISIBILITIES: tuple[Visibility, ...] = ("public", "unlisted")
GUEST_POLICIES: tuple[GuestPolicy, ...] = ("watch_and_chat", "no_guests")
SHOW_STATUSES: tuple[ShowStatus, ...] = ("scheduled", "live", "ended")
PUBLISHER_KINDS: tuple[PublisherKind, ...] = ("whip", "browser")


_Choice = TypeVar("_Choice", bound=str)


def _pick(value: str, choices: tuple[_Choice, ...]) -> _Choice:
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{value!r} is not one of {choices}")


@dataclass(frozen=True)
class Room:
    id: int
    slug: str
    owner_id: int
    title: str
    visibility: Visibility
    guest_policy: GuestPolicy
    created_at: int
    program_publisher_id: str | None
    cohost_ids: tuple[int, ...]
    """Ids of the co-hosts, ascending, as of when this value was read."""

    @property
    def topic(self) -> str:
        """The event topic of everything that happens in the room."""
        return f"room:{self.slug}"

    @classmethod
    def from_row(cls, row: RoomRow, cohost_ids: tuple[int, ...] = ()) -> Room:
        return cls(id=row.id, slug=row.slug, owner_id=row.owner_id, title=row.title,
                   visibility=_pick(row.visibility, VISIBILITIES),
                   guest_policy=_pick(row.guest_policy, GUEST_POLICIES), created_at=row.created_at,
                   program_publisher_id=row.program_publisher_id, cohost_ids=tuple(sorted(cohost_ids)))


@dataclass(frozen=True)
class Show:
    id: int
    room_id: int
    room_slug: str
    title: str
    description: str
    status: ShowStatus
    scheduled_start: int | None
    started_at: int | None
    ended_at: int | None
    created_at: int

    @classmethod
    def from_row(cls, row: ShowRow, room_slug: str) -> Show:
        return cls(id=row.id, room_id=row.room_id, room_slug=room_slug, title=row.title,
                   description=row.description, status=_pick(row.status, SHOW_STATUSES),
                   scheduled_start=row.scheduled_start, started_at=row.started_at, ended_at=row.ended_at,
                   created_at=row.created_at)


@dataclass(frozen=True)
class PublisherSession:
    id: str
    show_id: int
    user_id: int
    kind: PublisherKind
    started_at: int
    ended_at: int | None

    @classmethod
    def from_row(cls, row: PublisherSessionRow) -> PublisherSession:
        return cls(id=row.id, show_id=row.show_id, user_id=row.user_id, kind=_pick(row.kind, PUBLISHER_KINDS),
                   started_at=row.started_at, ended_at=row.ended_at)


@dataclass(frozen=True)
class PublishGrant:
    """Permission for `user` to publish into `show`, the live show of `room` (created just now if
    `created_room`)."""

    user: User
    room: Room
    show: Show
    created_room: bool


def can_publish(user: User, room: Room) -> bool:
    """Admins publish anywhere, hosts into rooms they own or co-host; viewers and disabled users nowhere."""
    if user.disabled or not user.is_publisher:
        return False
    return user.is_admin or user.id == room.owner_id or user.id in room.cohost_ids


def can_manage(user: User, room: Room) -> bool:
    """Editing a room and its co-hosts is for its owner and admins."""
    return not user.disabled and (user.is_admin or user.id == room.owner_id)
