"""Stream keys: the secret a host's encoder (OBS via WHIP, say) publishes with.

One key per host. The plain key is shown once, at rotation; only its SHA-256 is stored, so a database leak
does not let anyone go live. A key is random and long, so a fast hash suffices (no password hashing needed).
"""

from __future__ import annotations

import hmac
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Forbidden, NotFound
from accounts.models import StreamKeyRow, UserRow
from accounts.tokens import hash_token
from accounts.user import PUBLISHER_ROLES, User
from store import clock

logger = logging.getLogger(__name__)

PREFIX = "psk_"


async def rotate_stream_key(session: AsyncSession, user_id: int, *, now_ms: int | None = None) -> str:
    """Replace the user's stream key and return the new plain key (never retrievable again).

    Only hosts and admins have stream keys: Forbidden("not_a_host") otherwise, NotFound for an unknown user.
    """
    user = await session.get(UserRow, user_id)
    if user is None:
        raise NotFound("user_not_found", "no such user")
    if user.role not in PUBLISHER_ROLES or user.disabled:
        raise Forbidden("not_a_host", "only hosts and admins have stream keys")
    key = PREFIX + secrets.token_urlsafe(24)
    now = clock.now_ms() if now_ms is None else now_ms
    # An upsert, so two concurrent first rotations cannot both insert; the later one's key wins.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {"key_hash": hash_token(key), "created_at": now}
    await session.execute(insert(StreamKeyRow).values(user_id=user_id, **values)
                          .on_conflict_do_update(index_elements=[StreamKeyRow.user_id], set_=values))
    logger.info("stream key rotated", extra={"user_id": user_id})
    return key


async def user_for_stream_key(session: AsyncSession, key: str | None) -> User | None:
    """The enabled account whose stream key this is, or None."""
    if not key:
        return None
    digest = hash_token(key)
    row = (await session.execute(
        select(StreamKeyRow.key_hash, UserRow).join(UserRow, UserRow.id == StreamKeyRow.user_id)
        .where(StreamKeyRow.key_hash == digest))).one_or_none()
    if row is None:
        return None
    key_hash, user = row
    if not hmac.compare_digest(key_hash, digest) or user.disabled:
        return None
    return User.from_row(user)
