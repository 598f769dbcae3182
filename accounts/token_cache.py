"""Verified tokens remembered until they expire, so a client hammering the API is not re-verified per request.

Verifying an HS256 access token (base64, JSON, HMAC, claim checks) costs tens of microseconds in PyJWT: in a
flash sale it was a fifth of a refused reserve's CPU. Access tokens are stateless (nothing revokes one
before its `exp`; a changed role is re-read from the database where it matters), so a verified token stays
valid until its expiry, and the cache honours exactly that: an entry is used only while the server clock is
before the token's `exp`, and only with the secret that verified it. Failures are never cached. The cache
is bounded (least recently used entries go first), so a flood of distinct tokens costs memory only up to
`max_entries`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from accounts.tokens import Principal, verify_token
from store import clock

MAX_ENTRIES = 20_000


class VerifiedTokens:
    """`verify(token, secret)` with the answers of `verifier` remembered per token until the token expires."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 verifier: Callable[[str, str], Principal] = verify_token) -> None:
        self.max_entries = max_entries
        self._verifier = verifier
        self._entries: OrderedDict[str, Principal] = OrderedDict()
        self._secret = ""

    def verify(self, token: str, secret: str) -> Principal:
        """The token's principal; raises like `verifier` (Unauthorized) for a bad or expired token."""
        if secret != self._secret:
            self._entries.clear()
            self._secret = secret
        principal = self._entries.get(token)
        if principal is not None:
            if clock.now_ms() < principal.expires_at:
                self._entries.move_to_end(token)
                return principal
            del self._entries[token]
        principal = self._verifier(token, secret)
        self._entries[token] = principal
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return principal

    def __len__(self) -> int:
        return len(self._entries)
