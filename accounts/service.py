"""Accounts: creating users, checking passwords, logging in, and the first administrator.

Every function takes the caller's session, so a caller can combine several in one transaction; functions
that write need a session from `Database.write()`.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import passwords
from accounts.errors import Conflict, Invalid, NotFound, Unauthorized
from accounts.models import UserRow
from accounts.tokens import TokenPair, TokenPolicy, issue_token_pair
from accounts.user import User, normalize_email, validate_display_name, validate_role
from store import clock
from store.statements import table_of

logger = logging.getLogger(__name__)


async def create_user(session: AsyncSession, email: str, password: str, role: str = "viewer",
                      display_name: str | None = None, *, now_ms: int | None = None) -> User:
    """A new enabled account. Invalid (field email/password/role/display_name) or Conflict("email_taken")."""
    address = normalize_email(email)
    problem = passwords.password_problem(password)
    if problem is not None:
        raise Invalid("weak_password", problem, "password")
    checked_role = validate_role(role)
    name = validate_display_name(display_name if display_name is not None else address.split("@", 1)[0])
    if await _row_by_email(session, address) is not None:
        raise Conflict("email_taken", "an account with this email already exists", "email")
    row = UserRow(email=address, display_name=name, role=checked_role,
                  password_hash=passwords.hash_password(password),
                  created_at=clock.now_ms() if now_ms is None else now_ms, disabled=False)
    # The check above settles it on SQLite, where writers take turns; on PostgreSQL a concurrent insert can
    # still win, and the savepoint keeps the caller's transaction usable after the unique constraint says so.
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise Conflict("email_taken", "an account with this email already exists", "email") from None
    logger.info("user created", extra={"user_id": row.id, "role": row.role})
    return User.from_row(row)


async def _row_by_email(session: AsyncSession, address: str) -> UserRow | None:
    return (await session.execute(select(UserRow).where(UserRow.email == address))).scalar_one_or_none()


_USERS = table_of(UserRow)
_USER = select(_USERS).where(_USERS.c.id == bindparam("user"))


async def get_user(session: AsyncSession, user_id: int) -> User:
    """The account with this id; NotFound("user_not_found") otherwise. (Every write of a signed-in caller
    reads its account: one statement built once.)"""
    row = (await session.execute(_USER, {"user": user_id})).first()
    if row is None:
        raise NotFound("user_not_found", "no such user")
    return User.from_row(row)


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    try:
        address = normalize_email(email)
    except Invalid:
        return None
    row = await _row_by_email(session, address)
    return None if row is None else User.from_row(row)


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The account `email` and `password` identify; Unauthorized("bad_credentials") otherwise, taking about as
    long whether or not the email exists. A disabled account gets Unauthorized("account_disabled"), but only
    after its password checked out. Upgrades the stored hash when the hasher's parameters changed, so it needs
    a write session."""
    try:
        row = await _row_by_email(session, normalize_email(email))
    except Invalid:
        row = None
    if row is None:
        passwords.burn_verification(password)
        raise Unauthorized("bad_credentials", "wrong email or password")
    if not passwords.verify_password(row.password_hash, password):
        raise Unauthorized("bad_credentials", "wrong email or password")
    if row.disabled:
        raise Unauthorized("account_disabled", "the account is disabled")
    if passwords.needs_rehash(row.password_hash):
        row.password_hash = passwords.hash_password(password)
        await session.flush()
    return User.from_row(row)


async def login(session: AsyncSession, email: str, password: str, policy: TokenPolicy, *,
                now_ms: int | None = None) -> TokenPair:
    """Authenticate and start a new login: an access token plus the first refresh token of a new family."""
    user = await authenticate(session, email, password)
    pair = await issue_token_pair(session, user, policy, now_ms=now_ms)
    logger.info("user logged in", extra={"user_id": user.id})
    return pair


async def ensure_first_admin(session: AsyncSession, email: str, password: str, *,
                             now_ms: int | None = None) -> User | None:
    """Create an admin with these credentials if there is no admin yet; returns it, or None when an admin
    already exists (so calling this at every start is harmless).

    An existing non-admin account with this email is refused with Conflict("email_taken") rather than
    promoted: whoever registered it chose its password, and that need not be the operator.
    """
    admins = (await session.execute(select(func.count()).select_from(UserRow)
                                    .where(UserRow.role == "admin"))).scalar_one()
    if admins:
        return None
    try:
        user = await create_user(session, email, password, "admin", now_ms=now_ms)
    except Conflict:
        existing = await _row_by_email(session, normalize_email(email))
        if existing is not None and existing.role == "admin":
            return None  # another node created it just now
        raise Conflict("email_taken", "the first admin's email belongs to an existing non-admin account; "
                       "choose another address or promote that account", "email") from None
    logger.warning("created the first admin account", extra={"user_id": user.id})
    return user
