"""Access, guest and refresh tokens.

Access tokens are short-lived HS256 JWTs, checked without the database. Guest tokens are JWTs too: a guest has
no account, so the signed nickname and random subject *are* the identity. Refresh tokens are opaque random
strings of which only the SHA-256 is stored; each use rotates them within a family, so a stolen token that
is used after its owner refreshed (or the reverse) is noticed and ends the whole login.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Invalid, Unauthorized
from accounts.models import RefreshTokenRow, UserRow
from accounts.user import User
from config.schema import AuthSettings
from store import clock
from store.database import Database

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
ACCESS = "access"
GUEST = "guest"
GUEST_ROLE = "guest"
NICKNAME_MIN_LENGTH = 2
NICKNAME_MAX_LENGTH = 32
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "typ"]


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for: an account (`user_id` set) or a guest (`role == "guest"`)."""

    subject: str
    """The `sub` claim: the user id as a string, or "guest:<random id>"."""
    role: str
    """viewer, host or admin as of when the token was issued, or guest."""
    user_id: int | None
    nickname: str | None
    """A guest's chosen name; None for accounts."""
    token_id: str
    expires_at: int
    """Milliseconds since the Unix epoch."""

    @property
    def is_guest(self) -> bool:
        return self.role == GUEST_ROLE


@dataclass(frozen=True)
class TokenPolicy:
    """What signing and lifetimes the token functions use; built once from settings and the secret key."""

    secret: str = field(repr=False)
    access_minutes: int = 15
    refresh_days: int = 30

    @classmethod
    def from_settings(cls, settings: AuthSettings, secret: str) -> TokenPolicy:
        return cls(secret=secret, access_minutes=settings.access_token_minutes,
                   refresh_days=settings.refresh_token_days)


@dataclass(frozen=True)
class TokenPair:
    """The result of a login or refresh. Token values stay out of the repr, and so out of logs."""

    access_token: str = field(repr=False)
    access_expires_at: int
    refresh_token: str = field(repr=False)
    refresh_expires_at: int
    user: User


def _now(now_ms: int | None) -> int:
    return clock.now_ms() if now_ms is None else now_ms


def _encode(claims: dict[str, Any], secret: str) -> str:
    if not secret:
        raise ValueError("no secret key to sign tokens with")
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _decode(token: str, secret: str, types: tuple[str, ...]) -> dict[str, Any]:
    if not secret:
        raise ValueError("no secret key to verify tokens with")
    try:
        claims: dict[str, Any] = jwt.decode(token, secret, algorithms=[ALGORITHM],
                                            options={"require": _REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token_expired", "the token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("token_invalid", "the token is invalid") from None
    if claims.get("typ") not in types:
        raise Unauthorized("token_invalid", "the token is invalid")
    return claims


def _principal(claims: dict[str, Any]) -> Principal:
    subject, typ = str(claims["sub"]), claims["typ"]
    expires_at = int(claims["exp"]) * 1000
    if typ == GUEST:
        nickname = claims.get("nick")
        if not subject.startswith("guest:") or not isinstance(nickname, str):
            raise Unauthorized("token_invalid", "the token is invalid")
        return Principal(subject=subject, role=GUEST_ROLE, user_id=None, nickname=nickname,
                         token_id=str(claims["jti"]), expires_at=expires_at)
    role = claims.get("role")
    if not subject.isdigit() or role not in ("viewer", "host", "admin"):
        raise Unauthorized("token_invalid", "the token is invalid")
    return Principal(subject=subject, role=role, user_id=int(subject), nickname=None,
                     token_id=str(claims["jti"]), expires_at=expires_at)


def issue_access_token(user: User, secret: str, minutes: int, now_ms: int | None = None) -> str:
    """A signed access token for `user`, valid `minutes` from `now_ms` (default: the clock)."""
    issued = _now(now_ms) // 1000
    return _encode({"sub": str(user.id), "role": user.role, "iat": issued, "exp": issued + minutes * 60,
                    "jti": uuid.uuid4().hex, "typ": ACCESS}, secret)


def verify_access_token(token: str, secret: str) -> Principal:
    """The account an access token speaks for; Unauthorized("token_expired" or "token_invalid") otherwise."""
    return _principal(_decode(token, secret, (ACCESS,)))


def validate_nickname(nickname: str) -> str:
    """The nickname stripped; Invalid(field="nickname") unless 2-32 printable characters without < or >."""
    value = nickname.strip()
    if (not NICKNAME_MIN_LENGTH <= len(value) <= NICKNAME_MAX_LENGTH or not value.isprintable()
            or "<" in value or ">" in value):
        raise Invalid("invalid_nickname", f"nickname must be {NICKNAME_MIN_LENGTH}-{NICKNAME_MAX_LENGTH} "
                      "printable characters without < or >", "nickname")
    return value


def issue_guest_token(nickname: str, secret: str, hours: int, now_ms: int | None = None) -> str:
    """A signed identity for a viewer without an account, with a fresh random subject."""
    issued = _now(now_ms) // 1000
    claims = {"sub": f"guest:{secrets.token_hex(8)}", "nick": validate_nickname(nickname), "iat": issued,
              "exp": issued + hours * 3600, "jti": uuid.uuid4().hex, "typ": GUEST}
    return _encode(claims, secret)


def verify_guest_token(token: str, secret: str) -> Principal:
    """The guest a guest token speaks for (role "guest"); Unauthorized otherwise."""
    return _principal(_decode(token, secret, (GUEST,)))


def verify_token(token: str, secret: str) -> Principal:
    """An access or a guest token, for places that admit both (watching, chat)."""
    return _principal(_decode(token, secret, (ACCESS, GUEST)))


ACCESS_COOKIE = "pinstream_access"
"""The HttpOnly cookie that carries a browser's access token (the REST API and the live-room socket read it)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header value (RFC 6750), or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which an opaque token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def issue_refresh_token(session: AsyncSession, user_id: int, days: int, *, family_id: str | None = None,
                              now_ms: int | None = None) -> tuple[str, int]:
    """Store a new refresh token (in `family_id`, or starting a family); returns (token, expires_at)."""
    now = _now(now_ms)
    token = secrets.token_urlsafe(32)
    expires_at = now + days * 86_400_000
    session.add(RefreshTokenRow(user_id=user_id, token_hash=hash_token(token),
                                family_id=family_id or uuid.uuid4().hex, expires_at=expires_at,
                                revoked_at=None, created_at=now))
    await session.flush()
    return token, expires_at


async def issue_token_pair(session: AsyncSession, user: User, policy: TokenPolicy, *,
                           family_id: str | None = None, now_ms: int | None = None) -> TokenPair:
    """An access token and a refresh token (new family unless `family_id`) for `user`."""
    now = _now(now_ms)
    refresh_token, refresh_expires_at = await issue_refresh_token(
        session, user.id, policy.refresh_days, family_id=family_id, now_ms=now)
    access_token = issue_access_token(user, policy.secret, policy.access_minutes, now)
    access_expires_at = (now // 1000 + policy.access_minutes * 60) * 1000
    return TokenPair(access_token=access_token, access_expires_at=access_expires_at,
                     refresh_token=refresh_token, refresh_expires_at=refresh_expires_at, user=user)


async def _revoke_family(session: AsyncSession, family_id: str, now: int) -> None:
    await session.execute(update(RefreshTokenRow)
                          .where(RefreshTokenRow.family_id == family_id, RefreshTokenRow.revoked_at.is_(None))
                          .values(revoked_at=now))


async def _find(session: AsyncSession, token: str, lock: bool) -> RefreshTokenRow | None:
    digest = hash_token(token)
    query = select(RefreshTokenRow).where(RefreshTokenRow.token_hash == digest)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row


class _Reused(Exception):
    def __init__(self, error: Unauthorized) -> None:
        super().__init__(error.message)
        self.error = error


async def _rotate(session: AsyncSession, token: str, policy: TokenPolicy, now: int) -> TokenPair:
    # FOR UPDATE (PostgreSQL; SQLite writers are serial anyway): two refreshes of one token take turns, so
    # the second sees the first's revocation and counts as reuse instead of forking the family.
    row = await _find(session, token, lock=True)
    if row is None:
        raise Unauthorized("refresh_invalid", "the refresh token is invalid")
    if row.revoked_at is not None:
        await _revoke_family(session, row.family_id, now)
        logger.warning("revoked refresh token presented again; revoked its whole family",
                       extra={"user_id": row.user_id, "family_id": row.family_id})
        raise _Reused(Unauthorized("refresh_reused", "the refresh token was already used; log in again"))
    if row.expires_at <= now:
        raise Unauthorized("refresh_expired", "the refresh token has expired; log in again")
    user_row = await session.get(UserRow, row.user_id)
    if user_row is None or user_row.disabled:
        raise Unauthorized("account_disabled", "the account is disabled")
    row.revoked_at = now
    user = User.from_row(user_row)
    return await issue_token_pair(session, user, policy, family_id=row.family_id, now_ms=now)


async def refresh(db: Database, token: str, policy: TokenPolicy, *, now_ms: int | None = None) -> TokenPair:
    """Rotate `token`: revoke it and return a new pair in the same family.

    This one owns its transaction rather than taking a session: on reuse it revokes the family and then
    raises Unauthorized("refresh_reused"), and that revocation must commit although the call fails.
    """
    now = _now(now_ms)
    reused: Unauthorized
    async with db.write() as session:
        try:
            return await _rotate(session, token, policy, now)
        except _Reused as exc:
            reused = exc.error
    raise reused


async def logout(session: AsyncSession, refresh_token: str, *, now_ms: int | None = None) -> bool:
    """Revoke every token of the login `refresh_token` belongs to; False if the token is unknown."""
    row = await _find(session, refresh_token, lock=False)
    if row is None:
        return False
    await _revoke_family(session, row.family_id, _now(now_ms))
    return True
