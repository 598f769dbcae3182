"""What an SDP offer's media sections carry, by name: the one place offers are checked before aiortc sees them.

A publisher's sections are named by order: its audio is "audio", its first video "video" (the camera) and a
second video "screen" (a screen share). A viewer names what each of its sections should receive; by default
the same names, which are the room's program outputs. Viewers on our own pages may also ask for one co-host's
own feed: "feed:{publisher session}:{audio|video|screen}".

A section whose direction no longer sends (publisher) or receives (viewer) is inactive: that is how a
renegotiation removes a track while keeping its place in the SDP, as browsers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiortc.sdp import SessionDescription

from media.api import MediaError

MAX_SDP_BYTES = 64 * 1024
PUBLISHED = {"audio": "audio", "video": "video", "screen": "video"}
"""Track name → media kind, for what a publisher sends and the room's program outputs."""
FEED_PREFIX = "feed:"
MAX_SECTIONS = 8
"""A viewer watching every co-host of a busy room stays far below this."""

Role = Literal["publisher", "viewer"]


@dataclass(frozen=True)
class Section:
    mid: str
    name: str
    kind: str
    active: bool


def kind_of(name: str) -> str | None:
    """The media kind a track name carries, or None when the name means nothing here."""
    if name.startswith(FEED_PREFIX):
        _session, _, track = name[len(FEED_PREFIX):].rpartition(":")
        return PUBLISHED.get(track) if _session else None
    return PUBLISHED.get(name)


def parse_feed(name: str) -> tuple[str, str] | None:
    """("publisher session", "track") for a feed name, None for a program output name."""
    if not name.startswith(FEED_PREFIX):
        return None
    session, _, track = name[len(FEED_PREFIX):].rpartition(":")
    return session, track


def offered_sections(offer_sdp: str, role: Role, names: list[str] | None = None,
                     renegotiating: bool = False) -> list[Section]:
    """Check an offer (size, syntax, kinds, directions, names) and say what each section carries.

    In a first offer every section must go the right way; in a renegotiation a section that does not is a
    track taken away."""
    if len(offer_sdp.encode()) > MAX_SDP_BYTES:
        raise MediaError("sdp_too_large", f"SDP over {MAX_SDP_BYTES} bytes", 413)
    try:
        description = SessionDescription.parse(offer_sdp)
    except (ValueError, IndexError, KeyError) as exc:
        raise MediaError("bad_sdp", f"malformed SDP offer: {exc}", 400) from None
    media = description.media
    if not media:
        raise MediaError("bad_sdp", "the offer has no media section", 400)
    for section in media:
        if section.kind not in ("audio", "video"):
            raise MediaError("unsupported_media", f"{section.kind} sections are not supported", 400)
    kinds = [section.kind for section in media]
    if len(kinds) > MAX_SECTIONS:
        raise MediaError("too_many_tracks", f"at most {MAX_SECTIONS} media sections per session", 400)
    if names is None or role == "publisher":
        names = _default_names(kinds)
    elif len(names) != len(kinds):
        raise MediaError("bad_tracks", f"tracks names {len(names)} sections; the offer has {len(kinds)}", 400,
                         "tracks")
    if len(set(names)) != len(names):
        raise MediaError("bad_tracks", "a track can be received only once per session", 400, "tracks")
    wanted = "send" if role == "publisher" else "recv"
    sections = []
    for index, (section, name) in enumerate(zip(media, names, strict=True)):
        if kind_of(name) != section.kind:
            raise MediaError("bad_tracks", f"section {index} is {section.kind}; {name[:80]!r} is not an {section.kind} "
                             "track", 400, "tracks")
        direction = section.direction or "sendrecv"
        active = wanted in direction  # "send" fits sendonly/sendrecv, "recv" recvonly/sendrecv
        if not active and not renegotiating:
            raise MediaError("bad_direction", f"{section.kind} is {direction}; expected {wanted}", 400)
        sections.append(Section(section.rtp.muxId or str(index), name, section.kind, active))
    return sections


def _default_names(kinds: list[str]) -> list[str]:
    if kinds.count("audio") > 1 or kinds.count("video") > 2 or len(kinds) > 3:
        raise MediaError("too_many_tracks", "one audio, one camera and one screen-share video track per session",
                         400)
    videos = iter(("video", "screen"))
    return ["audio" if kind == "audio" else next(videos) for kind in kinds]
