"""What travels on the bus: an event with its per-topic sequence number, or a marker that some were missed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One committed change on a topic. `seq` counts 1, 2, 3… per topic in commit order, so a receiver can
    drop what it already has and notice what it missed; `id` is the outbox row it was written as."""

    topic: str
    seq: int
    type: str
    payload: dict[str, Any]
    occurred_at: int
    """Milliseconds since the Unix epoch, when the change was written."""
    id: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the payload is copied, not shared)."""
        return {"topic": self.topic, "seq": self.seq, "type": self.type, "payload": dict(self.payload),
                "occurred_at": self.occurred_at, "id": self.id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of `to_dict`; raises KeyError, TypeError or ValueError on a malformed dict."""
        payload = data["payload"]
        if not isinstance(payload, dict):
            raise TypeError(f"event payload must be an object, not {type(payload).__name__}")
        return cls(topic=str(data["topic"]), seq=int(data["seq"]), type=str(data["type"]), payload=payload,
                   occurred_at=int(data["occurred_at"]), id=int(data["id"]))


@dataclass(frozen=True)
class Resync:
    """You may have missed events on `topic`: reload its state from the database, then carry on with the
    events that follow (some of them may already be part of what you reloaded; compare their seq)."""

    topic: str
    reason: str
