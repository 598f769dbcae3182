"""What callers get to know about an account: a frozen value without the password hash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Row

from accounts.errors import Invalid
from accounts.models import UserRow

Role = Literal["viewer", "host", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "host", "admin")
# Roles that may own rooms, hold a stream key and publish.
PUBLISHER_ROLES: frozenset[str] = frozenset({"host", "admin"})

EMAIL_MAX_LENGTH = 254
DISPLAY_NAME_MAX_LENGTH = 64
# Deliberately simple: one @, no whitespace, a dot in the domain. Deliverability is proven by mail, not regex.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


@dataclass(frozen=True)
class User:
    id: int
    email: str
    display_name: str
    role: Role
    created_at: int
    """Milliseconds since the Unix epoch."""
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_publisher(self) -> bool:
        """May own rooms and hold a stream key."""
        return self.role in PUBLISHER_ROLES

    @classmethod
    def from_row(cls, row: UserRow | Row[Any]) -> User:
        role = _known_role(row.role)
        if role is None:
            raise ValueError(f"user {row.id} has unknown role {row.role!r}")
        return cls(id=row.id, email=row.email, display_name=row.display_name, role=role,
                   created_at=row.created_at, disabled=row.disabled)


def normalize_email(email: str) -> str:
    """The stored form of an address (stripped, lower-case); raises Invalid(field="email") if malformed."""
    value = email.strip().lower()
    if len(value) > EMAIL_MAX_LENGTH or not _EMAIL.match(value):
        raise Invalid("invalid_email", "not a valid email address", "email")
    return value


def _known_role(value: str) -> Role | None:
    for known in ROLES:
        if value == known:
            return known
    return None


def validate_role(role: str) -> Role:
    known = _known_role(role)
    if known is not None:
        return known
    raise Invalid("invalid_role", f"role must be one of {', '.join(ROLES)}", "role")


def validate_display_name(display_name: str) -> str:
    value = " ".join(display_name.split())
    if not value or len(value) > DISPLAY_NAME_MAX_LENGTH or not value.isprintable():
        message = f"display name must be 1-{DISPLAY_NAME_MAX_LENGTH} printable characters"
        raise Invalid("invalid_display_name", message, "display_name")
    return value
