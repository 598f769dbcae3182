"""The errors every domain package raises, so the web layer maps them to HTTP in one place.

Each class fixes the HTTP status it stands for; `code` is the stable machine-readable reason clients switch
on, `message` is for people, and `field` names the offending input when there is one.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """Base of every expected failure of a domain operation (anything else is a bug)."""

    http_status: ClassVar[int] = 400

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, field={self.field!r})"


class Invalid(DomainError):
    """The input is malformed or out of range."""

    http_status = 422


class Unauthorized(DomainError):
    """Credentials are missing, wrong or expired."""

    http_status = 401


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    http_status = 403


class NotFound(DomainError):
    """The thing named does not exist (or the caller may not know it does)."""

    http_status = 404


class Conflict(DomainError):
    """The request contradicts the current state, e.g. a name that is already taken."""

    http_status = 409


__all__ = ["Conflict", "DomainError", "Forbidden", "Invalid", "NotFound", "Unauthorized"]
