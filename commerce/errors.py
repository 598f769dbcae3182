"""Conflicts that tell the client what to do next: a deadline to wait for, a queue position to watch."""

from __future__ import annotations

from collections.abc import Mapping

from accounts.errors import Conflict

Detail = int | str | None


class DetailedConflict(Conflict):
    """A 409 whose answer carries machine-readable details next to code and message (e.g. `starts_at`)."""

    def __init__(self, code: str, message: str, details: Mapping[str, Detail], field: str | None = None) -> None:
        super().__init__(code, message, field)
        self.details = dict(details)
