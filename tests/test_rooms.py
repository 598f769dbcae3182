"""Rooms and shows on SQLite and PostgreSQL: who may create, change and publish into rooms, the one live show
per room even under concurrent go-lives, listings, publisher sessions and the events of going live."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    User,
    create_user,
    rotate_stream_key,
)
from rooms import (
    Room,
    Show,
    add_cohost,
    authorize_publish,
    can_publish,
    close_publisher_session,
    create_room,
    end_show,
    get_room,
    get_show,
    go_live,
    list_shows,
    open_publisher_session,
    remove_cohost,
    schedule_show,
    set_program_publisher,
    update_room,
)
from rooms import live as live_module
from rooms import service as room_service
from rooms.models import RoomRow, ShowRow
from store import Database, now_ms
from store.models import OutboxEvent

PASSWORD = "correct horse"

pytestmark = pytest.mark.timeout(60)



@dataclass
class Cast:
    owner: User
    cohost: User
    stranger: User
    viewer: User
    admin: User
    room: Room


async def make_user(db: Database, name: str, role: str) -> User:
    async with db.write() as session:
        return await create_user(session, f"{name}@example.com", PASSWORD, role)


@pytest.fixture
async def cast(db: Database) -> Cast:
    """A room owned by a host, with a co-host, and people with no say in it."""
    owner = await make_user(db, "owner", "host")
    cohost = await make_user(db, "cohost", "host")
    stranger = await make_user(db, "stranger", "host")
    viewer = await make_user(db, "viewer", "viewer")
    admin = await make_user(db, "admin", "admin")
    async with db.write() as session:
        room = await create_room(session, owner, "main-stage", "Main stage")
        room = await add_cohost(session, owner, room, cohost.id)
    return Cast(owner=owner, cohost=cohost, stranger=stranger, viewer=viewer, admin=admin, room=room)


async def live_count(db: Database, room_id: int) -> int:
    async with db.read() as session:
        return int((await session.execute(select(func.count()).select_from(ShowRow).where(
            ShowRow.room_id == room_id, ShowRow.status == "live"))).scalar_one())


async def test_create_room(db: Database, cast: Cast) -> None:
    room = cast.room
    assert (room.slug, room.title, room.owner_id, room.visibility, room.guest_policy, room.cohost_ids) == (
        "main-stage", "Main stage", cast.owner.id, "public", "watch_and_chat", (cast.cohost.id,))
    assert room.topic == "room:main-stage" and room.program_publisher_id is None
    async with db.write() as session:
        with pytest.raises(Forbidden) as forbidden:
            await create_room(session, cast.viewer, "viewers-room", "Mine")
        assert forbidden.value.code == "not_a_host"
        with pytest.raises(Conflict) as conflict:
            await create_room(session, cast.stranger, "main-stage", "Again")
        assert (conflict.value.code, conflict.value.field) == ("slug_taken", "slug")
        for slug in ["ab", "-abc", "abc-", "Abc", "a_b", "a b", "a" * 65, "", "ünï"]:
            with pytest.raises(Invalid) as invalid:
                await create_room(session, cast.stranger, slug, "Title")
            assert invalid.value.field == "slug", slug
        for field, title, visibility, guest_policy in [("title", " ", "public", "no_guests"),
                                                       ("visibility", "T", "secret", "no_guests"),
                                                       ("guest_policy", "T", "public", "anyone")]:
            with pytest.raises(Invalid) as invalid:
                await create_room(session, cast.stranger, "fine-slug", title, visibility, guest_policy)
            assert invalid.value.field == field
        made = [await create_room(session, cast.admin, slug, "T", "unlisted", "no_guests")
                for slug in ("abc", "a1-b2", "a" * 64, "0-0")]
    assert [r.slug for r in made] == ["abc", "a1-b2", "a" * 64, "0-0"]
    assert (made[0].visibility, made[0].guest_policy) == ("unlisted", "no_guests")
    async with db.read() as session:
        assert await get_room(session, "main-stage") == room
        with pytest.raises(NotFound):
            await get_room(session, "nowhere")


async def test_update_room_is_for_owner_and_admin(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        room = await update_room(session, cast.owner, cast.room, title="Night market", visibility="unlisted")
        assert (room.title, room.visibility, room.guest_policy) == ("Night market", "unlisted", "watch_and_chat")
        room = await update_room(session, cast.admin, room, guest_policy="no_guests")
        assert room.guest_policy == "no_guests" and room.title == "Night market"
        for actor in (cast.cohost, cast.stranger, cast.viewer):
            with pytest.raises(Forbidden):
                await update_room(session, actor, room, title="Mine now")
        with pytest.raises(Invalid):
            await update_room(session, cast.owner, room, visibility="hidden")
    async with db.read() as session:
        assert (await get_room(session, "main-stage")).title == "Night market"


async def test_cohosts(db: Database, cast: Cast) -> None:
    assert can_publish(cast.owner, cast.room) and can_publish(cast.cohost, cast.room)
    assert can_publish(cast.admin, cast.room)
    assert not can_publish(cast.stranger, cast.room) and not can_publish(cast.viewer, cast.room)
    async with db.write() as session:
        with pytest.raises(Invalid) as invalid:
            await add_cohost(session, cast.owner, cast.room, cast.viewer.id)
        assert invalid.value.code == "cohost_not_host"
        with pytest.raises(Invalid):
            await add_cohost(session, cast.owner, cast.room, cast.owner.id)
        with pytest.raises(NotFound):
            await add_cohost(session, cast.owner, cast.room, cast.admin.id + 1000)
        with pytest.raises(Forbidden):
            await add_cohost(session, cast.cohost, cast.room, cast.stranger.id)  # co-hosts do not invite
        room = await add_cohost(session, cast.admin, cast.room, cast.stranger.id)
        room = await add_cohost(session, cast.owner, room, cast.stranger.id)  # idempotent
        assert room.cohost_ids == tuple(sorted((cast.cohost.id, cast.stranger.id)))
        assert can_publish(cast.stranger, room)
        room = await remove_cohost(session, cast.owner, room, cast.cohost.id)
        room = await remove_cohost(session, cast.owner, room, cast.cohost.id)
        assert room.cohost_ids == (cast.stranger.id,) and not can_publish(cast.cohost, room)
        with pytest.raises(Forbidden):
            await remove_cohost(session, cast.stranger, room, cast.stranger.id)


async def test_authorize_publish(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        keys = {name: await rotate_stream_key(session, getattr(cast, name).id)
                for name in ("owner", "cohost", "stranger", "admin")}
    async with db.write() as session:
        grant = await authorize_publish(session, keys["owner"], "main-stage", create_on_publish=False)
    assert (grant.user, grant.room, grant.created_room) == (cast.owner, cast.room, False)
    assert (grant.show.status, grant.show.room_id, grant.show.title) == ("live", cast.room.id, "Main stage")
    for name in ("cohost", "admin"):
        async with db.write() as session:
            other = await authorize_publish(session, keys[name], "main-stage", create_on_publish=True)
        assert other.show == grant.show and other.user == getattr(cast, name)
    async with db.write() as session:
        with pytest.raises(Forbidden) as forbidden:
            await authorize_publish(session, keys["stranger"], "main-stage", create_on_publish=True)
        assert forbidden.value.code == "not_room_publisher"
        for key in ("psk_wrong", "", None, keys["owner"] + "x"):
            with pytest.raises(Unauthorized) as unauthorized:
                await authorize_publish(session, key, "main-stage", create_on_publish=True)
            assert unauthorized.value.code == "bad_stream_key"
        with pytest.raises(NotFound) as not_found:
            await authorize_publish(session, keys["stranger"], "pop-up", create_on_publish=False)
        assert not_found.value.code == "room_not_found"
    assert await live_count(db, cast.room.id) == 1


async def test_create_on_publish(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        key = await rotate_stream_key(session, cast.stranger.id)
    async with db.write() as session:
        grant = await authorize_publish(session, key, "pop-up", create_on_publish=True)
    assert grant.created_room and grant.user == cast.stranger
    assert (grant.room.slug, grant.room.title, grant.room.owner_id) == ("pop-up", "pop-up", cast.stranger.id)
    assert (grant.show.status, grant.show.room_id, grant.show.room_slug) == ("live", grant.room.id, "pop-up")
    async with db.write() as session:
        again = await authorize_publish(session, key, "pop-up", create_on_publish=True)
        assert (again.created_room, again.room, again.show) == (False, grant.room, grant.show)
        with pytest.raises(Invalid):
            await authorize_publish(session, key, "Not A Slug", create_on_publish=True)
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(RoomRow))).scalar_one() == 2


async def test_scheduled_show_goes_live(db: Database, cast: Cast) -> None:
    soon, later = now_ms() + 60_000, now_ms() + 3_600_000
    async with db.write() as session:
        unscheduled = await schedule_show(session, cast.owner, cast.room, "Whenever", "", None)
        second = await schedule_show(session, cast.cohost, cast.room, "Later", "", later)
        first = await schedule_show(session, cast.admin, cast.room, "Soon", "  Deals!  ", soon)
        with pytest.raises(Forbidden):
            await schedule_show(session, cast.stranger, cast.room, "Mine", "", soon)
        with pytest.raises(Invalid):
            await schedule_show(session, cast.owner, cast.room, "", "", soon)
    assert (first.status, first.description, first.scheduled_start, first.started_at) == (
        "scheduled", "Deals!", soon, None)
    async with db.write() as session:
        live = await go_live(session, cast.room)
        assert await go_live(session, cast.room) == live
    assert (live.id, live.status, live.title) == (first.id, "live", "Soon")
    assert live.started_at is not None and abs(live.started_at - now_ms()) < 60_000
    async with db.write() as session:
        ended = await end_show(session, live)
        assert await end_show(session, live) == ended  # idempotent
        with pytest.raises(Conflict) as conflict:
            await end_show(session, second)
        assert conflict.value.code == "show_not_live"
    assert ended.status == "ended" and ended.ended_at is not None and ended.started_at == live.started_at
    async with db.write() as session:
        assert (await go_live(session, cast.room)).id == second.id
        await end_show(session, await get_show(session, second.id))
        assert (await go_live(session, cast.room)).id == unscheduled.id
        await end_show(session, await get_show(session, unscheduled.id))
        fresh = await go_live(session, cast.room)
    assert fresh.id not in (first.id, second.id, unscheduled.id)
    assert (fresh.title, fresh.status, fresh.scheduled_start) == ("Main stage", "live", None)


async def test_one_live_show_under_concurrent_go_live(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        scheduled = await schedule_show(session, cast.owner, cast.room, "The show", "", now_ms())

    async def one() -> Show:
        async with db.write() as session:
            return await go_live(session, cast.room)

    shows = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(20))), 30)
    assert {show.id for show in shows} == {scheduled.id}
    assert await live_count(db, cast.room.id) == 1
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(ShowRow))).scalar_one() == 1
        events = (await session.execute(select(OutboxEvent.type).where(
            OutboxEvent.topic == "room:main-stage"))).scalars().all()
    assert events == ["show.live"]  # announced once, by the one that started it


async def test_unique_index_is_the_last_line_of_defence(db: Database, cast: Cast,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the room lock every go_live races to create a show; the index lets one win, the rest join it."""
    async def no_lock(session: AsyncSession, room_id: int) -> RoomRow:
        return await room_service._room_row(session, room_id)

    monkeypatch.setattr(live_module, "_lock_room", no_lock)

    async def one() -> Show:
        async with db.write() as session:
            return await go_live(session, cast.room)

    shows = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(20))), 30)
    assert len({show.id for show in shows}) == 1
    assert await live_count(db, cast.room.id) == 1

    with pytest.raises(IntegrityError):
        async with db.write() as session:
            session.add(ShowRow(room_id=cast.room.id, title="Second", description="", status="live",
                                started_at=now_ms(), created_at=now_ms()))
    async with db.write() as session:  # many ended and scheduled shows are fine
        for status in ("ended", "ended", "scheduled", "scheduled"):
            session.add(ShowRow(room_id=cast.room.id, title=status, description="", status=status,
                                created_at=now_ms()))


async def test_listings(db: Database, cast: Cast) -> None:
    base = now_ms()
    async with db.write() as session:
        hidden = await create_room(session, cast.stranger, "back-room", "Back room", "unlisted")
        other = await create_room(session, cast.stranger, "side-stage", "Side stage")
        upcoming = [await schedule_show(session, cast.owner, cast.room, f"Up {n}", "", base + n * 60_000)
                    for n in (3, 1, 2)]
        unscheduled = await schedule_show(session, cast.owner, cast.room, "Some day")
        await schedule_show(session, cast.stranger, hidden, "Secret sale", "", base + 1000)
        past_one = await go_live(session, other, now_ms=base - 50_000)
        await end_show(session, past_one, now_ms=base - 40_000)
        past_two = await go_live(session, other, now_ms=base - 30_000)
        await end_show(session, past_two, now_ms=base - 20_000)
        side_live = await go_live(session, other, now_ms=base - 10_000)
        hidden_live = await go_live(session, hidden)
    async with db.read() as session:
        live = await list_shows(session, "live")
        coming = await list_shows(session, "upcoming")
        past = await list_shows(session, "past")
        assert [show.id for show in await list_shows(session, "upcoming", limit=2)] == [upcoming[1].id,
                                                                                         upcoming[2].id]
        assert [show.id for show in await list_shows(session, "upcoming", limit=2, offset=2)] == [
            upcoming[0].id, unscheduled.id]
        assert [show.id for show in await list_shows(session, "live", room_id=hidden.id)] == [hidden_live.id]
        with pytest.raises(Invalid):
            await list_shows(session, "someday")
    assert [show.id for show in live] == [side_live.id]
    assert [show.id for show in coming] == [upcoming[1].id, upcoming[2].id, upcoming[0].id, unscheduled.id]
    assert [show.id for show in past] == [past_two.id, past_one.id]
    assert all(show.room_slug != "back-room" for show in live + coming + past)
    assert live[0].room_slug == "side-stage" and coming[0].room_slug == "main-stage"


async def test_publisher_sessions(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        show = await go_live(session, cast.room)
        first = await open_publisher_session(session, show, cast.owner, "whip")
        second = await open_publisher_session(session, show, cast.cohost, "browser")
        with pytest.raises(Forbidden):
            await open_publisher_session(session, show, cast.stranger, "browser")
        with pytest.raises(Invalid):
            await open_publisher_session(session, show, cast.owner, "rtmp")
        room = await set_program_publisher(session, cast.room, second.id)
        assert room.program_publisher_id == second.id
        with pytest.raises(NotFound):
            await set_program_publisher(session, cast.room, "0" * 32)
    assert (first.kind, first.user_id, first.show_id, first.ended_at) == ("whip", cast.owner.id, show.id, None)
    assert len(first.id) == 32 and first.id != second.id
    async with db.write() as session:
        assert await close_publisher_session(session, second.id) == 1
        assert await close_publisher_session(session, second.id) == 1  # idempotent
        assert (await get_room(session, "main-stage")).program_publisher_id is None
        third = await open_publisher_session(session, show, cast.admin, "browser")
        await set_program_publisher(session, cast.room, third.id)
        with pytest.raises(NotFound):
            await close_publisher_session(session, "missing")
    async with db.write() as session:
        ended = await end_show(session, show)
        assert await close_publisher_session(session, first.id) == 0  # end_show closed them all
        assert (await get_room(session, "main-stage")).program_publisher_id is None
        with pytest.raises(Conflict):
            await open_publisher_session(session, ended, cast.owner, "whip")


async def test_going_live_and_ending_are_announced(db: Database, cast: Cast) -> None:
    async with db.write() as session:
        show = await go_live(session, cast.room)
        await go_live(session, cast.room)  # already live: nothing new to say
    async with db.write() as session:
        ended = await end_show(session, show)
        await end_show(session, ended)
    async with db.read() as session:
        events = (await session.execute(select(OutboxEvent).where(OutboxEvent.topic == "room:main-stage")
                                        .order_by(OutboxEvent.seq))).scalars().all()
    assert [(event.seq, event.type) for event in events] == [(1, "show.live"), (2, "show.ended")]
    live_payload, ended_payload = events[0].payload, events[1].payload
    assert live_payload["show_id"] == show.id and live_payload["started_at"] == show.started_at
    assert ended_payload["show_id"] == show.id and ended_payload["ended_at"] == ended.ended_at
    assert all(abs(event.payload["server_time"] - now_ms()) < 60_000 for event in events)
