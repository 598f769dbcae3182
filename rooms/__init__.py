"""Rooms and shows: who may publish where, scheduling and listing shows, going live and ending."""

from rooms.live import (
    close_publisher_session,
    end_show,
    go_live,
    open_publisher_session,
    set_program_publisher,
)
from rooms.publish import authorize_publish, grant_publish
from rooms.service import (
    add_cohost,
    create_room,
    find_room,
    get_room,
    get_room_by_id,
    get_show,
    list_shows,
    remove_cohost,
    schedule_show,
    update_room,
)
from rooms.values import PublisherSession, PublishGrant, Room, Show, can_manage, can_publish

__all__ = [
    "PublishGrant", "PublisherSession", "Room", "Show", "add_cohost", "authorize_publish", "can_manage",
    "can_publish", "close_publisher_session", "create_room", "end_show", "find_room", "get_room",
    "get_room_by_id", "get_show", "go_live", "grant_publish", "list_shows", "open_publisher_session", "remove_cohost",
    "schedule_show", "set_program_publisher", "update_room",
]
