"""The per-subscription order keeper: every bus delivers through one, so both honour the same contract."""

from __future__ import annotations

from dataclasses import dataclass

from bus.event import Event, Resync


@dataclass
class SequenceGuard:
    """Drops events at or below the last delivered seq (at-least-once publishing repeats some) and turns a
    jump in seq into a Resync, because events in between were lost somewhere."""

    topic: str
    last: int | None = None
    """Seq of the last event delivered, or that the subscriber already had (its `after_seq`)."""
    gap_allowed: bool = False
    """Set after a Resync went out: the subscriber reloads anyway, so the next jump needs no second one."""

    def resynced(self) -> None:
        self.gap_allowed = True

    def accept(self, event: Event) -> list[Event | Resync]:
        """What to deliver for `event`: nothing, the event, or a Resync followed by the event."""
        if self.last is not None and event.seq <= self.last:
            return []
        out: list[Event | Resync] = []
        if self.last is not None and event.seq > self.last + 1 and not self.gap_allowed:
            out.append(Resync(self.topic, f"missed events {self.last + 1}..{event.seq - 1}"))
        self.gap_allowed = False
        self.last = event.seq
        out.append(event)
        return out
