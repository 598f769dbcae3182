"""Accounts on SQLite and PostgreSQL: users and passwords, access/refresh/guest tokens, the first admin and
stream keys."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from sqlalchemy import func, select

from accounts import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TokenPolicy,
    Unauthorized,
    User,
    authenticate,
    create_user,
    ensure_first_admin,
    get_user,
    issue_access_token,
    issue_guest_token,
    login,
    logout,
    passwords,
    refresh,
    rotate_stream_key,
    user_for_stream_key,
    verify_access_token,
    verify_guest_token,
    verify_token,
)
from accounts.models import RefreshTokenRow, StreamKeyRow, UserRow
from store import Base, Database, now_ms

SECRET = "test-secret-key-with-at-least-32-bytes"
POLICY = TokenPolicy(secret=SECRET, access_minutes=15, refresh_days=30)
PASSWORD = "correct horse"

pytestmark = pytest.mark.timeout(60)



async def make_user(db: Database, email: str = "ann@example.com", role: str = "viewer") -> User:
    async with db.write() as session:
        return await create_user(session, email, PASSWORD, role)


def test_errors_carry_status_code_and_field() -> None:
    statuses = {Invalid: 422, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409}
    for cls, status in statuses.items():
        error = cls("some_code", "a message", "a_field")
        assert isinstance(error, DomainError)
        assert (error.http_status, error.code, error.message, error.field) == (status, "some_code", "a message",
                                                                             "a_field")
        assert str(error) == "a message"


async def test_create_and_authenticate(db: Database) -> None:
    async with db.write() as session:
        user = await create_user(session, "  Ann.Lee@Example.COM ", PASSWORD, "host", "Ann  Lee")
    assert (user.email, user.display_name, user.role, user.disabled) == ("ann.lee@example.com", "Ann Lee", "host",
                                                                          False)
    assert abs(user.created_at - now_ms()) < 60_000
    async with db.write() as session:
        assert await authenticate(session, "ANN.LEE@example.com", PASSWORD) == user
        for email, password in [("ann.lee@example.com", "wrong password"), ("bob@example.com", PASSWORD),
                                ("not an email", PASSWORD)]:
            with pytest.raises(Unauthorized) as caught:
                await authenticate(session, email, password)
            assert caught.value.code == "bad_credentials"
    async with db.read() as session:
        assert await get_user(session, user.id) == user
        stored = (await session.execute(select(UserRow.password_hash))).scalar_one()
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
        with pytest.raises(NotFound):
            await get_user(session, user.id + 1000)


async def test_default_display_name_and_role(db: Database) -> None:
    async with db.write() as session:
        user = await create_user(session, "carol@example.com", PASSWORD)
    assert (user.display_name, user.role) == ("carol", "viewer")


async def test_duplicate_email_is_a_conflict_whatever_the_case(db: Database) -> None:
    await make_user(db, "ann@example.com")
    async with db.write() as session:
        with pytest.raises(Conflict) as caught:
            await create_user(session, "ANN@example.com", PASSWORD)
        assert (caught.value.code, caught.value.field) == ("email_taken", "email")
        await create_user(session, "bob@example.com", PASSWORD)  # the transaction is still usable
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(UserRow))).scalar_one() == 2


@pytest.mark.parametrize(("email", "password", "role", "field"), [
    ("ann@example.com", "short", "viewer", "password"),
    ("ann@example.com", "", "viewer", "password"),
    ("ann@example.com", "x" * 2000, "viewer", "password"),
    ("ann.example.com", PASSWORD, "viewer", "email"),
    ("ann@example", PASSWORD, "viewer", "email"),
    ("ann @example.com", PASSWORD, "viewer", "email"),
    ("", PASSWORD, "viewer", "email"),
    ("ann@example.com", PASSWORD, "superuser", "role"),
])
async def test_invalid_input_names_its_field(db: Database, email: str, password: str, role: str,
                                             field: str) -> None:
    async with db.write() as session:
        with pytest.raises(Invalid) as caught:
            await create_user(session, email, password, role)
    assert caught.value.field == field
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(UserRow))).scalar_one() == 0


async def test_disabled_account_cannot_log_in(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        row = await session.get(UserRow, user.id)
        assert row is not None
        row.disabled = True
    async with db.write() as session:
        with pytest.raises(Unauthorized) as caught:
            await authenticate(session, user.email, PASSWORD)
        assert caught.value.code == "account_disabled"
        with pytest.raises(Unauthorized) as caught:
            await authenticate(session, user.email, "wrong password")
        assert caught.value.code == "bad_credentials"  # says nothing about the account without its password


async def test_login_upgrades_outdated_hashes(db: Database) -> None:
    user = await make_user(db)
    async with db.read() as session:
        old = (await session.execute(select(UserRow.password_hash))).scalar_one()
    passwords.configure(time_cost=2, memory_cost=8192, parallelism=1)
    async with db.write() as session:
        await authenticate(session, user.email, PASSWORD)
    async with db.read() as session:
        new = (await session.execute(select(UserRow.password_hash))).scalar_one()
    assert new != old and "t=2" in new
    assert passwords.verify_password(new, PASSWORD) and not passwords.needs_rehash(new)


def test_access_token_round_trip() -> None:
    user = User(id=42, email="ann@example.com", display_name="Ann", role="host", created_at=0, disabled=False)
    token = issue_access_token(user, SECRET, 15)
    principal = verify_access_token(token, SECRET)
    assert (principal.user_id, principal.role, principal.subject, principal.is_guest) == (42, "host", "42", False)
    assert abs(principal.expires_at - (now_ms() + 15 * 60_000)) < 5_000
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["typ"] == "access" and claims["sub"] == "42" and claims["jti"] == principal.token_id
    assert verify_token(token, SECRET) == principal


def _segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_access_token_expiry_and_tampering() -> None:
    user = User(id=7, email="ann@example.com", display_name="Ann", role="viewer", created_at=0, disabled=False)
    expired = issue_access_token(user, SECRET, 15, now_ms=now_ms() - 3_600_000)
    with pytest.raises(Unauthorized) as caught:
        verify_access_token(expired, SECRET)
    assert caught.value.code == "token_expired"

    token = issue_access_token(user, SECRET, 15)
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    promoted = ".".join([header, _segment({**claims, "role": "admin"}), signature])
    unsigned = ".".join([_segment({"alg": "none", "typ": "JWT"}), _segment({**claims, "role": "admin"}), ""])
    resigned = jwt.encode({**claims, "role": "admin"}, "some-other-secret-of-at-least-32-bytes", algorithm="HS256")
    flipped = ".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")])
    no_expiry = jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256")
    refresh_typed = jwt.encode({**claims, "typ": "refresh"}, SECRET, algorithm="HS256")
    for forged in [promoted, unsigned, resigned, flipped, no_expiry, refresh_typed, "garbage", ""]:
        with pytest.raises(Unauthorized) as caught:
            verify_access_token(forged, SECRET)
        assert caught.value.code == "token_invalid", forged
    with pytest.raises(Unauthorized):
        verify_access_token(token, "a-different-secret-of-at-least-32-bytes")


def test_guest_tokens() -> None:
    token = issue_guest_token("  Shopper Sam  ", SECRET, 24)
    guest = verify_guest_token(token, SECRET)
    assert (guest.role, guest.is_guest, guest.user_id, guest.nickname) == ("guest", True, None, "Shopper Sam")
    assert guest.subject.startswith("guest:") and len(guest.subject) > len("guest:")
    assert abs(guest.expires_at - (now_ms() + 24 * 3_600_000)) < 5_000
    assert verify_token(token, SECRET) == guest
    assert verify_guest_token(issue_guest_token("Shopper Sam", SECRET, 24), SECRET).subject != guest.subject
    with pytest.raises(Unauthorized) as caught:
        verify_access_token(token, SECRET)  # a guest is no account
    assert caught.value.code == "token_invalid"
    user = User(id=1, email="a@example.com", display_name="A", role="viewer", created_at=0, disabled=False)
    with pytest.raises(Unauthorized):
        verify_guest_token(issue_access_token(user, SECRET, 15), SECRET)
    with pytest.raises(Unauthorized) as caught:
        verify_guest_token(issue_guest_token("Sam", SECRET, 1, now_ms=now_ms() - 7_200_000), SECRET)
    assert caught.value.code == "token_expired"
    for nickname in ["", "a", "  a  ", "x" * 33, "<script>", "a>b", "tab\there", "nul\x00l"]:
        with pytest.raises(Invalid) as invalid:
            issue_guest_token(nickname, SECRET, 1)
        assert invalid.value.field == "nickname", nickname
    assert verify_guest_token(issue_guest_token("x" * 32, SECRET, 1), SECRET).nickname == "x" * 32


async def test_login_and_refresh_rotation(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        with pytest.raises(Unauthorized):
            await login(session, user.email, "wrong password", POLICY)
        first = await login(session, user.email, PASSWORD, POLICY)
    assert first.user == user and verify_access_token(first.access_token, SECRET).user_id == user.id
    assert first.access_token not in repr(first) and first.refresh_token not in repr(first)

    second = await refresh(db, first.refresh_token, POLICY)
    assert second.refresh_token != first.refresh_token and second.access_token != first.access_token
    assert verify_access_token(second.access_token, SECRET).user_id == user.id
    third = await refresh(db, second.refresh_token, POLICY)
    async with db.read() as session:
        rows = (await session.execute(select(RefreshTokenRow).order_by(RefreshTokenRow.id))).scalars().all()
    assert len(rows) == 3 and len({row.family_id for row in rows}) == 1
    assert [row.revoked_at is None for row in rows] == [False, False, True]
    assert all(len(row.token_hash) == 64 for row in rows)
    assert rows[2].token_hash == hashlib.sha256(third.refresh_token.encode()).hexdigest()
    for token in (first.refresh_token, second.refresh_token, third.refresh_token):
        assert all(token not in (row.token_hash, row.family_id) for row in rows)

    with pytest.raises(Unauthorized) as caught:
        await refresh(db, "not-a-token", POLICY)
    assert caught.value.code == "refresh_invalid"


async def test_refresh_reuse_revokes_the_family(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        first = await login(session, user.email, PASSWORD, POLICY)
        other_login = await login(session, user.email, PASSWORD, POLICY)
    second = await refresh(db, first.refresh_token, POLICY)

    with pytest.raises(Unauthorized) as caught:
        await refresh(db, first.refresh_token, POLICY)  # a thief (or the victim) replays the rotated token
    assert caught.value.code == "refresh_reused"
    async with db.read() as session:
        family = (await session.execute(select(RefreshTokenRow).where(
            RefreshTokenRow.family_id != select(RefreshTokenRow.family_id).where(
                RefreshTokenRow.token_hash == hashlib.sha256(other_login.refresh_token.encode()).hexdigest())
            .scalar_subquery()))).scalars().all()
    assert len(family) == 2 and all(row.revoked_at is not None for row in family)  # committed despite the error
    with pytest.raises(Unauthorized) as caught:
        await refresh(db, second.refresh_token, POLICY)  # the newest token of that login is dead too
    assert caught.value.code == "refresh_reused"
    assert (await refresh(db, other_login.refresh_token, POLICY)).user == user  # other logins live on


async def test_refresh_token_expires(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        pair = await login(session, user.email, PASSWORD, POLICY, now_ms=now_ms() - 31 * 86_400_000)
    with pytest.raises(Unauthorized) as caught:
        await refresh(db, pair.refresh_token, POLICY)
    assert caught.value.code == "refresh_expired"


async def test_logout_revokes_the_family(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        first = await login(session, user.email, PASSWORD, POLICY)
    second = await refresh(db, first.refresh_token, POLICY)
    async with db.write() as session:
        assert await logout(session, second.refresh_token) is True
        assert await logout(session, "unknown-token") is False
    with pytest.raises(Unauthorized):
        await refresh(db, second.refresh_token, POLICY)
    async with db.read() as session:
        assert all(row.revoked_at is not None
                   for row in (await session.execute(select(RefreshTokenRow))).scalars())


async def test_disabled_account_cannot_refresh(db: Database) -> None:
    user = await make_user(db)
    async with db.write() as session:
        pair = await login(session, user.email, PASSWORD, POLICY)
        row = await session.get(UserRow, user.id)
        assert row is not None
        row.disabled = True
    with pytest.raises(Unauthorized) as caught:
        await refresh(db, pair.refresh_token, POLICY)
    assert caught.value.code == "account_disabled"


async def test_first_admin_is_created_once(db: Database) -> None:
    async with db.write() as session:
        admin = await ensure_first_admin(session, "Root@Example.com", PASSWORD)
    assert admin is not None and (admin.email, admin.role) == ("root@example.com", "admin")
    for email in ("root@example.com", "someone-else@example.com"):
        async with db.write() as session:
            assert await ensure_first_admin(session, email, PASSWORD) is None
    async with db.read() as session:
        assert (await session.execute(select(UserRow.email, UserRow.role))).all() == [("root@example.com",
                                                                                     "admin")]
    async with db.write() as session:
        assert await authenticate(session, "root@example.com", PASSWORD) == admin


async def test_first_admin_never_promotes_an_existing_account(db: Database) -> None:
    await make_user(db, "root@example.com")
    async with db.write() as session:
        with pytest.raises(Conflict) as caught:
            await ensure_first_admin(session, "root@example.com", PASSWORD)
    assert caught.value.code == "email_taken"
    async with db.read() as session:
        assert (await session.execute(select(UserRow.role))).scalar_one() == "viewer"
    async with db.write() as session:
        with pytest.raises(Invalid):
            await ensure_first_admin(session, "admin@example.com", "short")


async def _everything_stored(db: Database) -> str:
    """Every value of every table, as text."""
    async with db.read() as session:
        dumps = [repr((await session.execute(select(table))).all()) for table in Base.metadata.sorted_tables]
    return "\n".join(dumps)


async def test_stream_key_rotation(db: Database) -> None:
    host = await make_user(db, "host@example.com", "host")
    async with db.write() as session:
        first = await rotate_stream_key(session, host.id)
    async with db.read() as session:
        assert await user_for_stream_key(session, first) == host
    async with db.write() as session:
        second = await rotate_stream_key(session, host.id)
        assert await user_for_stream_key(session, second) == host  # visible within the same transaction
    assert first.startswith("psk_") and second.startswith("psk_") and first != second
    assert len(first) >= len("psk_") + 32
    async with db.read() as session:
        assert await user_for_stream_key(session, first) is None
        assert await user_for_stream_key(session, second) == host
        for bad in (None, "", "psk_", second + "x", second.upper()):
            assert await user_for_stream_key(session, bad) is None
        rows = (await session.execute(select(StreamKeyRow))).scalars().all()
    assert [(row.user_id, row.key_hash) for row in rows] == [(host.id, hashlib.sha256(second.encode()).hexdigest())]
    stored = await _everything_stored(db)
    assert first not in stored and second not in stored
    assert first.removeprefix("psk_") not in stored and second.removeprefix("psk_") not in stored


async def test_stream_keys_are_for_hosts(db: Database) -> None:
    viewer = await make_user(db, "viewer@example.com", "viewer")
    admin = await make_user(db, "admin@example.com", "admin")
    async with db.write() as session:
        with pytest.raises(Forbidden) as caught:
            await rotate_stream_key(session, viewer.id)
        assert caught.value.code == "not_a_host"
        with pytest.raises(NotFound):
            await rotate_stream_key(session, admin.id + 1000)
        key = await rotate_stream_key(session, admin.id)
    async with db.write() as session:
        row = await session.get(UserRow, admin.id)
        assert row is not None
        row.disabled = True
    async with db.read() as session:
        assert await user_for_stream_key(session, key) is None  # a disabled account's key publishes nothing
