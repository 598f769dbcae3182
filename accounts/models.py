"""Tables of accounts: users, their refresh tokens and the hosts' stream keys.

Services hand callers the frozen values of `accounts.user` instead of these rows, so a row never travels
beyond the transaction that loaded it and a password hash never reaches a response by accident.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, BigId

ROLE_CHECK = "role IN ('viewer', 'host', 'admin')"


class UserRow(Base):
    """An account. `email` is stored lower-case, so its unique constraint ignores case."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(10))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class RefreshTokenRow(Base):
    """One refresh token of a login. Rotation keeps the `family_id`, so reuse of a rotated token can revoke
    every token descended from the same login; only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class StreamKeyRow(Base):
    """A host's one stream key (WHIP/RTMP-style publishing credential); only its SHA-256 is stored."""

    __tablename__ = "stream_keys"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
