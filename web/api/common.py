"""What handlers share: the runtime, the signed-in account, and the models of users, rooms and shows."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Unauthorized
from accounts.service import get_user
from accounts.tokens import Principal, TokenPolicy
from accounts.user import User
from config.schema import Settings
from rooms.values import Room, Show
from web.api.registry import PRINCIPAL
from web.middleware import CONFIG
from web.runtime import RUNTIME, Runtime


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def settings(request: web.Request) -> Settings:
    return request.app[CONFIG].current


def token_policy(request: web.Request) -> TokenPolicy:
    return TokenPolicy.from_settings(settings(request).auth, runtime(request).secrets.secret_key or "")


def principal(request: web.Request) -> Principal:
    """The verified caller of an operation whose access level is above public (the registry checked it)."""
    found: Principal | None = request.get(PRINCIPAL)
    if found is None or found.user_id is None:
        raise Unauthorized("unauthorized", "sign in to do this")
    return found


async def caller(request: web.Request, session: AsyncSession) -> User:
    """The signed-in account as stored now (its role may have changed since the token was issued)."""
    user = await get_user(session, principal(request).user_id or 0)
    if user.disabled:
        raise Unauthorized("account_disabled", "the account is disabled")
    return user


class UserOut(BaseModel):
    id: int
    email: str
    display_name: str
    role: str
    created_at: int

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, email=user.email, display_name=user.display_name, role=user.role,
                   created_at=user.created_at)


class RoomOut(BaseModel):
    id: int
    slug: str
    owner_id: int
    title: str
    visibility: str
    guest_policy: str
    created_at: int
    cohost_ids: list[int]

    @classmethod
    def of(cls, room: Room) -> RoomOut:
        return cls(id=room.id, slug=room.slug, owner_id=room.owner_id, title=room.title,
                   visibility=room.visibility, guest_policy=room.guest_policy, created_at=room.created_at,
                   cohost_ids=list(room.cohost_ids))


class ShowOut(BaseModel):
    id: int
    room_slug: str
    title: str
    description: str
    status: str
    scheduled_start: int | None
    started_at: int | None
    ended_at: int | None
    created_at: int

    @classmethod
    def of(cls, show: Show) -> ShowOut:
        return cls(id=show.id, room_slug=show.room_slug, title=show.title, description=show.description,
                   status=show.status, scheduled_start=show.scheduled_start, started_at=show.started_at,
                   ended_at=show.ended_at, created_at=show.created_at)
